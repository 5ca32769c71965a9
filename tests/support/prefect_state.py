"""A flow run as the Prefect API that PREFECT_API_URL names reports it, read in a process of its own
(the test process keeps no Prefect client):

    python -m tests.support.prefect_state RUN_ID              TYPE NAME MESSAGE of its state
    python -m tests.support.prefect_state RUN_ID --name       its state's name
    python -m tests.support.prefect_state RUN_ID --logs       its log records, one `LEVEL message` a line
    python -m tests.support.prefect_state RUN_ID --artifact KEY   the latest artifact KEY of the run"""
import logging
import sys
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, LogFilter,
                                            LogFilterFlowRunId)
from prefect.client.schemas.sorting import LogSort


def logs(c, run_id: UUID) -> list[str]:
    out, offset = [], 0
    while True:
        page = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200,
                           offset=offset, sort=LogSort.TIMESTAMP_ASC)
        out += [f"{logging.getLevelName(r.level)} {r.message}" for r in page]
        if len(page) < 200:
            return out
        offset += 200


def main(argv: list[str]) -> None:
    run_id = UUID(argv[0])
    with get_client(sync_client=True) as c:
        if "--logs" in argv[1:]:
            print("\n".join(logs(c, run_id)))
            return
        if "--artifact" in argv[1:]:
            key = argv[argv.index("--artifact") + 1]
            found = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]),
                                                                    flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
            print(max(found, key=lambda a: a.created).data if found else "")
            return
        state = c.read_flow_run(run_id).state
    if "--name" in argv[1:]:
        print(state.name)
    else:
        print(state.type.value, state.name, (state.message or "").replace("\n", " "))


if __name__ == "__main__":
    main(sys.argv[1:])
