import pytest

from flows.pipeline import StageFailed, in_dag_order


def test_stages_run_in_dag_order_whatever_order_they_are_given():
    assert in_dag_order(["tag", "review", "scrape"]) == ["scrape", "review", "tag"]
    assert in_dag_order(None)[0] == "scrape" and in_dag_order(None)[-1] == "export"
    with pytest.raises(StageFailed, match="unknown stage"):
        in_dag_order(["scrape", "deploy"])
