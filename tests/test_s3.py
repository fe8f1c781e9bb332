"""The same code path production uses, against a real S3-compatible server on 127.0.0.1 (moto's
server mode): the paired dataset is read from S3 and every artifact is written to S3; S3 answering
503 to a share of the requests is absorbed by the client's retries."""

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

pytest.importorskip("moto")
s3fs = pytest.importorskip("s3fs")
from moto.server import ThreadedMotoServer  # noqa: E402

from halo_assets.demo import run_retrain  # noqa: E402
from halo_core import uris  # noqa: E402
from tests.conftest import REAL_CUTOUTS  # noqa: E402
from tests.factories import free_port, three_splits  # noqa: E402

BUCKET = "darkhaloscope"


class FlakyProxy(ThreadingHTTPServer):
    """Forwards to S3 but answers every ``every``-th request with 503 SlowDown, as S3 does under load."""

    def __init__(self, upstream_port: int, every: int):
        self.upstream_port, self.every, self.requests, self.injected = upstream_port, every, 0, 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _forward(self):
        server: FlakyProxy = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with server.lock:
            server.requests += 1
            fail = server.requests % server.every == 0
            server.injected += fail
        if fail:
            message = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        upstream = http.client.HTTPConnection("127.0.0.1", server.upstream_port, timeout=30)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
        reply = upstream.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 behind a proxy that fails every 7th request; env points the
    standard AWS client chain (boto3, s3fs) at it, as AWS_ENDPOINT_URL would in production."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = FlakyProxy(port, every=7)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.server_port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_RETRY_MODE": "standard",
           "AWS_MAX_ATTEMPTS": "6"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setattr(uris, "CACHE_DIR", tmp_path_factory.mktemp("halo_cache"))
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        yield fs, proxy
        s3fs.S3FileSystem.clear_instance_cache()
    proxy.shutdown()
    server.stop()


def test_uris_round_trip_on_s3(s3):
    fs, _ = s3
    uris.atomic_write_json(f"s3://{BUCKET}/t/a.json", {"x": float("nan"), "y": 1})
    assert uris.read_json(f"s3://{BUCKET}/t/a.json") == {"x": None, "y": 1}
    assert uris.find(f"s3://{BUCKET}/t", ".json") == [f"s3://{BUCKET}/t/a.json"]


def test_whole_graph_reads_and_writes_s3_through_transient_errors(s3, tmp_path):
    fs, proxy = s3
    fs.put(str(three_splits(tmp_path / "paired", n=24)) + "/", f"{BUCKET}/v5_cosmos_paired/", recursive=True)
    overrides = [f"train_path=s3://{BUCKET}/v5_cosmos_paired", "sample_construction=ctrl_negative",
                 "go_no_go.min_test_auroc=0.5", "go_no_go.min_precision_at_recall_0_90=0.01",
                 "go_no_go.max_train_val_gap=10", "go_no_go.max_ece_after_calibration=0.99", "gates.max_auc=0.99"]
    with dg.instance_for_test() as instance:
        result = run_retrain("smoke", overrides, f"s3://{BUCKET}/halo", instance)
    crashed = [e.step_key for e in result.all_events if e.is_step_failure
               and e.step_failure_data.error.cls_name != "DagsterAssetCheckFailedError"]
    assert crashed == []  # every step ran; a tiny smoke model may still fail a go/no-go check
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert {"filtered_dataset", "trained_model", "calibrated_model", "evaluation_report"} <= materialized
    root = f"{BUCKET}/halo/smoke"
    # dataset folders (the filtered shards, the report) are read at the version their pointer names
    filtered, report = (uris.current(f"s3://{root}/{a}").removeprefix("s3://") for a in ("filtered_dataset",
                                                                                        "evaluation_report"))
    for key in (f"{filtered}/manifest.json", f"{filtered}/train/pairs.f16", f"{root}/shortcut_gates/gates.json",
                f"{root}/calibrated_model/calibration.json", f"{report}/report.html"):
        assert fs.exists(key), key
    assert not fs.exists(f"{BUCKET}/halo/smoke/paired_stamps")  # train_path set: nothing synthesized
    assert proxy.injected > 5  # the run really went through failing requests


def test_model_versions_and_production_pointer_on_s3(s3, trained, capsys):
    from halo_core import cli
    from halo_core.model.registry import add_version, production, resolve_model, set_production, versions

    registry = f"s3://{BUCKET}/registry_test/smoke/promoted_model"  # apart from the graph test's registry
    card = {"go_no_go": {"go": True, "failed": []}, "evaluated_on": "f" * 16,
            "test_metrics": {"auroc": 0.9, "n": 10, "tpr_at_fpr": []}}
    first = add_version(registry, trained.model_path, card)
    second = add_version(registry, trained.model_path, card)  # same second, same hash: its own version
    assert first != second and [c["version"] for c in versions(registry)] == [first, second]
    set_production(registry, second, reason="test")
    set_production(registry, first, reason="rollback")
    assert production(registry) == first and resolve_model(registry) == f"{registry}/versions/{first}/model.pt"
    assert cli.main(["models", "list", "--registry", registry]) == 0
    assert f"* {first}" in capsys.readouterr().out


def test_a_rebuild_on_s3_switches_the_pointer_and_a_failed_one_keeps_the_last_good(s3, tmp_path):
    from halo_core.config import load_preset
    from halo_core.data.filtering import build_filtered_dataset
    from halo_core.data.shards import open_split
    from halo_core.errors import ContractError
    from tests.factories import make_paired_table, write_split_dirs

    fs, _ = s3
    cfg, out = load_preset("smoke"), f"s3://{BUCKET}/rebuild/filtered_dataset"
    build_filtered_dataset(cfg, str(three_splits(tmp_path / "a", n=4)), out)
    first = uris.current(out)
    assert len(open_split(out, "train")) == 4  # mirrored into the cache
    build_filtered_dataset(cfg, str(three_splits(tmp_path / "b", n=6)), out)
    second = uris.current(out)
    assert second != first and not fs.exists(first.removeprefix("s3://"))  # the replaced version is gone
    assert len(open_split(out, "train")) == 6  # the cached copy followed the pointer
    failing = write_split_dirs(tmp_path / "bad", {
        "train": make_paired_table(4), "test": make_paired_table(4, seed=2, bricks=("3000p010",), id_prefix="c"),
        "val": make_paired_table(4, seed=1, bricks=("2000p010",), id_prefix="b", nan_rows=range(4))})
    with pytest.raises(ContractError, match="split 'val' is empty"):
        build_filtered_dataset(cfg, str(failing), out)
    assert uris.current(out) == second and len(open_split(out, "train")) == 6
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(out.removeprefix("s3://"))) == sorted(
        ["current.json", second.rsplit("/", 1)[-1]])


def test_real_cutouts_are_read_from_a_parquet_on_s3(s3, tmp_path):
    """halo inject's parquet layout: a `cutout` npz blob per galaxy, its meta_* fields as columns."""
    import pandas as pd

    from halo_core.simulate.injection import read_cutouts

    fixtures = sorted(REAL_CUTOUTS.glob("*.npz"))
    local = read_cutouts([str(p) for p in fixtures])
    frame = pd.DataFrame({"cutout": [p.read_bytes() for p in fixtures],
                          **{f"meta_{k}": [c.meta[k] for c in local] for k in ("ra", "dec", "brickname")}})
    frame.to_parquet(tmp_path / "cutouts.parquet", index=False)
    uris.atomic_write_bytes(f"s3://{BUCKET}/cutouts/part-0.parquet", (tmp_path / "cutouts.parquet").read_bytes())
    remote = read_cutouts(f"s3://{BUCKET}/cutouts")
    assert len(remote) == 6 and all(r.control.tobytes() == c.control.tobytes() for r, c in zip(remote, local))
    assert [r.meta["brickname"] for r in remote] == [c.meta["brickname"] for c in local]
