// Downloads: the character as PNG at the model's resolution or enlarged, and the transition as one
// sheet; the file name says the seed and the tags.
export const ENLARGE = 4;

export function canvasToPng(canvas) {
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('PNG encoding failed'))), 'image/png'));
}

export function save(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// `canvas` scaled by `factor` (smoothly: a photo of the character, not pixel art).
export function enlarged(canvas, factor) {
  const c = document.createElement('canvas');
  c.width = canvas.width * factor;
  c.height = canvas.height * factor;
  const ctx = c.getContext('2d');
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(canvas, 0, 0, c.width, c.height);
  return c;
}

// ImageData frames on one canvas, `cols` a row, in order.
export function sheet(frames, cols) {
  const s = frames[0].width, rows = Math.ceil(frames.length / cols), c = document.createElement('canvas');
  c.width = cols * s;
  c.height = rows * s;
  const ctx = c.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, c.width, c.height);
  frames.forEach((f, i) => ctx.putImageData(f, (i % cols) * s, Math.floor(i / cols) * s));
  return c;
}

// File names keep to letters, digits, '+', '-', '_' and '.'.
export function fileName(stem, suffix = '') {
  return `moeflow-${stem}${suffix}.png`.replace(/[^A-Za-z0-9+_.-]/g, '_');
}
