"""Ray checks of tests/test_executors.py, run by it in a pytest process of their own
(``ray.init`` leaves native crash handlers that a JVM started later in the same process
cannot live with): a local Ray session (2 CPUs) and a two-node ``ray.cluster_utils``
cluster give the results of the local executor, and a failed task is one error."""

from __future__ import annotations

import pytest

import test_executors
from test_executors import (LocalExecutor, TaskError, add, check_same_as_local,  # noqa: F401
                            evaluate_with, fail_on_two, local_results, open_executor,
                            replay_log, replay_with, spec, ten)

ray = pytest.importorskip("ray", reason="ltrr[ray] is not installed")
# Ray's workers cannot import this test module by name: its functions travel by value
ray.cloudpickle.register_pickle_by_value(__import__(__name__))
ray.cloudpickle.register_pickle_by_value(test_executors)


@pytest.fixture(scope="class")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="class")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                           "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.usefixtures("local_ray")
class TestLocalRay:
    def test_same_results_as_local(self, local_results, spec, tmp_path, replay_log,
                                   monkeypatch):
        reference = replay_with(spec, replay_log, tmp_path / "local", LocalExecutor(),
                                monkeypatch)
        with open_executor("ray") as ex:
            assert ex.workers == 2
            check_same_as_local(local_results, spec, tmp_path, ex)
            assert replay_with(spec, replay_log, tmp_path / "ray", ex, monkeypatch) == reference

    def test_a_failed_task_is_one_error_not_a_ray_traceback(self):
        with open_executor("ray") as ex:
            assert ex.map(add, [1, 2, 3], init=ten) == [11, 12, 13]
            with pytest.raises(TaskError) as err:
                ex.map(fail_on_two, [0, 1, 2, 3], names=["a", "b", "c", "d"])
        assert str(err.value) == "task 'c' failed: ValueError: two is not allowed"


@pytest.mark.usefixtures("two_nodes")
class TestTwoNodeCluster:
    def test_work_spreads_over_both_nodes_with_the_same_results(self, spec, tmp_path,
                                                                local_results):
        with open_executor("ray") as ex:
            assert ex.workers == 2
            assert len(set(ex.nodes())) == 2
            ref = local_results[1]
            evaluate_with(spec, tmp_path / "run.trec", ex)
            assert (tmp_path / "run.trec").read_bytes() == (ref / "run.trec").read_bytes()
