// web/src/noise.js on the seeds given (argv[2], JSON): each seed's z and variation seeds, perturbed and
// interpolated noise, the noise through its URL text and JSON, and parsed seed texts. One JSON line out;
// tests/export/test_export.py compares it with tasks/export/noise.py.
import { decodeNoise, encodeNoise, noiseFromJson, noiseToJson, parseSeed, perturb, seedToZ, slerp, variationSeeds } from '../../web/src/noise.js';

const seeds = JSON.parse(process.argv[2]);
const out = seeds.map((s) => {
  const z = seedToZ(s, 9), e = seedToZ((s + 1) >>> 0, 9);
  const back = decodeNoise(encodeNoise(z), 9), fromJson = noiseFromJson(noiseToJson(z, s), 9);
  return {
    z: Array.from(z), variations: variationSeeds(s, 4), perturbed: Array.from(perturb(z, e, 0.3)),
    slerp: [0, 0.25, 1].map((t) => Array.from(slerp(z, e, t))),
    same: back.every((v, i) => Object.is(v, z[i])) && fromJson.every((v, i) => Object.is(v, z[i])),
  };
});
const parsed = [parseSeed('4294967297'), parseSeed(' 12 '), parseSeed('Miku ♪'), parseSeed('')];
process.stdout.write(JSON.stringify({ seeds: out, parsed }) + '\n');
