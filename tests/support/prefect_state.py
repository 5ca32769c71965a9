"""`python -m tests.support.prefect_state RUN_ID [--name]`: a flow run's state, read from the Prefect API
that PREFECT_API_URL names, in a process of its own (the test process keeps no Prefect client)."""
import sys
from uuid import UUID

from prefect.client.orchestration import get_client


def main(argv: list[str]) -> None:
    with get_client(sync_client=True) as c:
        state = c.read_flow_run(UUID(argv[0])).state
    if "--name" in argv[1:]:
        print(state.name)
    else:
        print(state.type.value, state.name, (state.message or "").replace("\n", " "))


if __name__ == "__main__":
    main(sys.argv[1:])
