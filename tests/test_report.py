"""The report renders from a small fixed results set; export writes the labelling CSV; the sweep
runs, skips what is done and resumes."""

import csv
import json
import os

import ml_collections
import numpy as np
import pytest

from configs import export as export_config
from configs import report as report_config
from configs import sweep as sweep_config
from galaxy_jax import config_files, preemption
from galaxy_jax.modes import report, sweep

N, K, D = 24, 2, 3
ACCS = {("dec", 0): 0.9, ("dec", 1): 0.7, ("kmeans", 0): 0.6}


def _write_run(run_dir, features_dir, acc, seed):
    """A finished DEC run of N rows, K clusters, a D-dim embedding, on synthetic features."""
    os.makedirs(run_dir)
    rng = np.random.default_rng(seed)
    centres = np.asarray([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]], np.float32)
    assign = np.arange(N) % K
    z = (centres[assign] + rng.normal(0, 0.5, (N, D))).astype(np.float32)
    q = np.full((N, K), 0.2, np.float32)
    q[np.arange(N), assign] = 0.8
    q[:, :] += np.linspace(0, 0.1, N)[:, None] * (np.arange(K) == assign[:, None])
    q /= q.sum(1, keepdims=True)
    np.save(os.path.join(run_dir, "q.npy"), q)
    np.save(os.path.join(run_dir, "assignments.npy"), assign.astype(np.int32))
    np.save(os.path.join(run_dir, "embedding.npy"), z)
    np.save(os.path.join(run_dir, "centres.npy"), centres)
    results = {
        "seed": seed,
        "config": {"mode": "dec", "seed": seed, "data": {"name": "features", "path": features_dir}},
        "metrics": {
            "dec": {
                "acc": acc,
                "acc_dominant": acc,
                "nmi": acc / 2,
                "ari": acc / 3,
                "contingency": [[10, 2], [2, 10]],
            }
        },
        "history": {
            "sae/finetune": {"loss": [[10, 1.0], [20, 0.5]]},
            "dec": {
                "delta_label": [[0, 0.2], [20, 0.01]],
                "loss": [[20, 0.1]],
                "acc": [[0, 0.8], [20, acc]],
            },
        },
    }
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f)
    return results


@pytest.fixture(scope="module")
def fixed_sweep(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fixed"))
    features = os.path.join(root, "features")
    os.makedirs(features)
    data = dict(name="synthetic", synthetic_n=N, synthetic_size=32, synthetic_seed=0)
    np.save(os.path.join(features, "ids.npy"), np.asarray([f"synthetic-0-{i}" for i in range(N)]))
    np.save(os.path.join(features, "labels.npy"), (np.arange(N) % 2).astype(np.int32))
    with open(os.path.join(features, "features_meta.json"), "w") as f:
        json.dump({"config": {"data": data}}, f)
    with open(os.path.join(root, "sweep.jsonl"), "w") as f:
        for (variant, seed), acc in ACCS.items():
            run_dir = os.path.join(root, variant, f"seed{seed}")
            r = _write_run(run_dir, features, acc, seed)
            line = {"variant": variant, "seed": seed, "workdir": run_dir, "metrics": r["metrics"]}
            f.write(json.dumps(line) + "\n")
        f.write('{"variant": "torn", "se\n')  # a torn last line is skipped
    return root


def test_report_renders_from_fixed_results(fixed_sweep, tmp_path):
    config = report_config.get_config("smoke")
    config.sweep = os.path.join(fixed_sweep, "sweep.jsonl")
    text = report.run_report(config, str(tmp_path))
    assert open(tmp_path / "report.md").read() == text
    # dec: acc 0.9 and 0.7 -> mean 0.8, sample std 0.1414; kmeans: one seed, std 0.
    assert "| dec | dec | 2 | 0.8000 ± 0.1414 | 0.8000 ± 0.1414 | 0.4000 ± 0.0707 |" in text
    assert "| kmeans | dec | 1 | 0.6000 ± 0.0000 |" in text
    assert "torn" not in text
    for variant in ("dec", "kmeans"):
        for kind in ("confusion", "embedding", "montage", "curves"):
            png = tmp_path / "figures" / f"{variant}_{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
            assert f"figures/{variant}_{kind}.png" in text
    assert not list((tmp_path / "figures").glob("*_merge.png"))  # no merge in these runs


def test_report_skips_montage_without_images(fixed_sweep, tmp_path):
    run_dir = os.path.join(fixed_sweep, "dec", "seed0")
    config = report_config.get_config("smoke")
    config.sweep = ""
    config.runs = (run_dir,)
    os.rename(os.path.join(fixed_sweep, "features"), os.path.join(fixed_sweep, "gone"))
    try:
        text = report.run_report(config, str(tmp_path))
    finally:
        os.rename(os.path.join(fixed_sweep, "gone"), os.path.join(fixed_sweep, "features"))
    assert "**Most / least confident per cluster**: _skipped: no " in text
    assert (tmp_path / "figures" / "dec_curves.png").exists()


def test_report_draws_the_merge_of_a_merged_run(fixed_sweep, tmp_path):
    """A run with dec.merge_to (4 clusters merged into 2): the report has the merge figure."""
    from galaxy_jax import merge, metrics

    run_dir = str(tmp_path / "merged_run")
    results = _write_run(run_dir, os.path.join(fixed_sweep, "features"), 0.9, 0)
    assign = (np.arange(N) % 4).astype(np.int32)
    centres = np.asarray([[0, 0, 0], [4, 0, 0], [0.5, 0, 0], [4.5, 0, 0]], np.float32)
    merged, results["merge"] = merge.merge_clusters(centres, assign, 2)
    assert results["merge"]["groups"] == [[0, 2], [1, 3]]
    labels = np.arange(N) % 2
    results["metrics"] = {"dec": metrics.all_metrics(labels, assign)}
    results["metrics"]["dec_merged"] = metrics.all_metrics(labels, merged)
    np.save(os.path.join(run_dir, "assignments.npy"), assign)
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f)
    config = report_config.get_config("smoke")
    config.sweep, config.runs = "", (run_dir,)
    text = report.run_report(config, str(tmp_path / "report"))
    png = tmp_path / "report" / "figures" / "merged_run_merge.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Clusters merged (dec.merge_to)](figures/merged_run_merge.png)" in text
    assert "dec_merged" in text  # the merged metrics are in the summary table


def test_export_csv(fixed_sweep, tmp_path):
    config = export_config.get_config("smoke")
    run_dir = os.path.join(fixed_sweep, "dec", "seed0")
    config.run = run_dir
    path = report.run_export(config, str(tmp_path))
    with open(path) as f:
        rows = list(csv.DictReader(f))
    head = ["id", "cluster", "confidence", "dist_0", "dist_1", "q_0", "q_1", "anomaly_score"]
    assert list(rows[0])[: len(head)] == head
    assert len(rows) == N
    import pyarrow.parquet

    twin = pyarrow.parquet.read_table(tmp_path / "clusters.parquet").to_pylist()
    assert [r["id"] for r in twin] == [r["id"] for r in rows]
    assert [r["cluster"] for r in twin] == [int(r["cluster"]) for r in rows]
    for r in rows:
        assert float(r["anomaly_score"]) == pytest.approx(1 - float(r["confidence"]), abs=1e-6)
    ranked = list(csv.DictReader(open(tmp_path / "anomalies.csv")))
    scores = [float(r["anomaly_score"]) for r in ranked]
    assert scores == sorted(scores, reverse=True) and len(ranked) == min(N, config.anomalies)
    assert scores[0] == max(float(r["anomaly_score"]) for r in rows)
    clusters = [int(r["cluster"]) for r in rows]
    assert clusters == sorted(clusters)
    for k in range(K):
        conf = [float(r["confidence"]) for r in rows if int(r["cluster"]) == k]
        assert conf == sorted(conf, reverse=True)
    q = np.load(os.path.join(run_dir, "q.npy"))
    z = np.load(os.path.join(run_dir, "embedding.npy"))
    c = np.load(os.path.join(run_dir, "centres.npy"))
    i = int(rows[0]["id"].rsplit("-", 1)[1])
    assert float(rows[0]["confidence"]) == pytest.approx(q[i].max(), abs=1e-6)
    assert float(rows[0]["dist_1"]) == pytest.approx(np.linalg.norm(z[i] - c[1]), rel=1e-5)


def test_apply_overrides():
    c = ml_collections.ConfigDict({"a": {"b": 1.0, "dims": (1, 2)}})
    config_files.apply_overrides(c, {"a.b": 2.0, "a.dims": [3, 4]})
    assert c.a.b == 2.0 and c.a.dims == (3, 4)
    with pytest.raises(Exception, match="no field"):
        config_files.apply_overrides(c, {"a.nope": 1})
    assert config_files.parse_common("data.path=work/f, dec.maxiter=100,x=(1,2)") == {
        "data.path": "work/f",
        "dec.maxiter": 100,
        "x": (1, 2),
    }
    config = sweep_config.get_config("smoke")
    config.common = "dec.maxiter=7"
    assert {c.dec.maxiter for *_, c in sweep.run_configs(config) if c.mode == "dec"} == {7}


def test_sweep_runs_skips_and_resumes(tmp_path, monkeypatch):
    config = sweep_config.get_config("smoke")
    workdir = str(tmp_path)
    calls = []
    real_get = sweep.modes.get

    def counting_get(name):
        fn = real_get(name)
        return lambda c, w: (calls.append((name, c.seed)), fn(c, w))[1]

    monkeypatch.setattr(sweep.modes, "get", counting_get)
    # The first DEC run is preempted at its 5th step: the sweep stops, with k-means recorded.
    stop = iter([False] * 4 + [True])
    monkeypatch.setattr(preemption, "requested", lambda: next(stop, False))
    with pytest.raises(preemption.Preempted):
        sweep.run_sweep(config, workdir)
    lines = [json.loads(x) for x in open(tmp_path / "sweep.jsonl")]
    assert [(r["variant"], r["seed"]) for r in lines] == [("kmeans", 0), ("kmeans", 1)]
    # Re-run: k-means is skipped, DEC seed 0 resumes, DEC seed 1 runs; one line per run.
    calls.clear()
    sweep.run_sweep(config, workdir)
    assert calls == [("dec", 0), ("dec", 1)]
    lines = [json.loads(x) for x in open(tmp_path / "sweep.jsonl")]
    assert sorted((r["variant"], r["seed"]) for r in lines) == [
        ("dec", 0),
        ("dec", 1),
        ("kmeans", 0),
        ("kmeans", 1),
    ]
    assert all(r["metrics"]["dec"]["acc"] > 0.9 for r in lines if r["variant"] == "dec")
    assert "contingency" not in lines[-1]["metrics"]["dec"]
    # A third pass runs nothing and appends nothing.
    calls.clear()
    sweep.run_sweep(config, workdir)
    assert calls == [] and len(open(tmp_path / "sweep.jsonl").readlines()) == 4
    # And the report renders from it (blobs: no images, so the montage is skipped).
    rc = report_config.get_config("smoke")
    rc.sweep = str(tmp_path / "sweep.jsonl")
    text = report.run_report(rc, str(tmp_path / "report"))
    assert "| dec | dec | 2 |" in text and "_skipped: the run's data are not extracted" in text


@pytest.mark.parametrize("arg", ["galaxy", "mnist", "ann", "smoke"])
def test_every_shipped_sweep_resolves(arg):
    runs = sweep.run_configs(sweep_config.get_config(arg))
    assert len(runs) == len(sweep_config.get_config(arg).variants) * len(
        sweep_config.get_config(arg).seeds
    )
    assert all(config.seed == seed for _, seed, _, _, config in runs)
