"""Tests of rmis.protocol.dcase against hand-computed figures and an official-style reference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from rmis.errors import RMISError
from rmis.protocol import dcase
from rmis.protocol.dcase import DcaseResult, nearest_cosine_distance, score_dcase

M = 0.1  # max_fpr of every pAUC


def mcclish(area: float) -> float:
    """McClish-standardised partial AUC at max_fpr = 0.1, in percent."""
    return 100 * 0.5 * (1 + (area - M**2 / 2) / (M - M**2 / 2))


def table(*rows: tuple) -> dict:
    """Keyword arguments of score_dcase from rows (subset, split, machine, section, domain,
    label, embedding)."""
    cols = list(zip(*rows, strict=True))
    return {
        "subset": list(cols[0]),
        "split": list(cols[1]),
        "machine": list(cols[2]),
        "section": list(cols[3]),
        "domain": list(cols[4]),
        "label": list(cols[5]),
        "embeddings": np.array(cols[6], dtype=np.float64),
    }


def ray(t: float) -> list[float]:
    """2-D point whose cosine distance to [1, 0] is 1 - 1/sqrt(1 + t^2), increasing in t >= 0."""
    return [1.0, t]


def dist(t: float) -> float:
    return 1 - 1 / math.sqrt(1 + t * t)


def znorm(values: list[float]) -> list[float]:
    """(v - mean) / population std, by the definition (no numpy)."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / std for v in values]


# --------------------------------------------------------------------------------------------
# nearest_cosine_distance
# --------------------------------------------------------------------------------------------


def test_nearest_cosine_distance_by_hand():
    bank = np.array([[1.0, 0.0], [0.0, 2.0]])
    queries = np.array([[5.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [3.0, 4.0]])
    d = nearest_cosine_distance(bank, queries)
    assert d.dtype == np.float64 and d.shape == (4,)
    # [-1, 0] is orthogonal to [0, 2]: similarity 0 beats -1
    assert d == pytest.approx([0.0, 1 - 1 / math.sqrt(2), 1.0, 0.2], abs=1e-15)
    # an all-zero embedding has no direction: an error, never a silent distance
    with pytest.raises(RMISError, match="row 1 is all zeros"):
        nearest_cosine_distance(bank, np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_nearest_cosine_distance_float32_input_is_computed_in_float64():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(7, 5)).astype(np.float32)
    queries = rng.normal(size=(9, 5)).astype(np.float32)
    d = nearest_cosine_distance(bank, queries)
    nn = NearestNeighbors(n_neighbors=1, metric="cosine").fit(bank.astype(np.float64))
    expected = nn.kneighbors(queries.astype(np.float64), 1)[0][:, 0]
    assert d.dtype == np.float64
    np.testing.assert_allclose(d, expected, rtol=0, atol=1e-12)


def test_nearest_cosine_distance_blocks_give_the_same_result(monkeypatch):
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(13, 4))
    queries = rng.normal(size=(29, 4))
    whole = nearest_cosine_distance(bank, queries)
    # (BLAS may round a 1-row block differently from a big one: compare to 1e-14)
    monkeypatch.setattr(dcase, "_BLOCK_BYTES", 8 * 13 * 3)  # 3 queries per block
    np.testing.assert_allclose(nearest_cosine_distance(bank, queries), whole, rtol=0, atol=1e-14)
    monkeypatch.setattr(dcase, "_BLOCK_BYTES", 1)  # 1 query per block
    np.testing.assert_allclose(nearest_cosine_distance(bank, queries), whole, rtol=0, atol=1e-14)
    assert nearest_cosine_distance(bank, np.zeros((0, 4))).shape == (0,)


def test_nearest_cosine_distance_errors():
    with pytest.raises(RMISError, match="empty"):
        nearest_cosine_distance(np.zeros((0, 3)), np.ones((2, 3)))
    with pytest.raises(RMISError, match="dim"):
        nearest_cosine_distance(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(RMISError, match="2-D"):
        nearest_cosine_distance(np.ones(3), np.ones((2, 3)))
    with pytest.raises(RMISError, match="NaN or Inf"):
        nearest_cosine_distance(np.ones((2, 3)), np.array([[1.0, np.nan, 0.0]]))


# --------------------------------------------------------------------------------------------
# hand-computed cases
# --------------------------------------------------------------------------------------------


def section_2020(subset, mach, sec, normals, anomalies):
    """One 2020 section: bank = [1, 0]; test clips on rays t (distance increasing in t)."""
    rows = [(subset, "train", mach, sec, "source", "normal", [2.0, 0.0])]
    rows += [(subset, "test", mach, sec, "source", "normal", ray(t)) for t in normals]
    rows += [(subset, "test", mach, sec, "source", "anomaly", ray(t)) for t in anomalies]
    return rows


def test_2020_by_hand():
    rows = (
        # normals t = 0, 1, 3; anomalies t = 2, 4: AUC = 5/6; ROC (0, .5) -> (1/3, .5): A = .05
        section_2020("dev", "fan", 2, [0, 1, 3], [2, 4])
        + section_2020("dev", "fan", 0, [0, 1], [2, 3])  # perfect: 100, 100
        + section_2020("dev", "pump", 0, [2, 3], [0, 1])  # inverted: AUC 0, A = 0
        + section_2020("eval", "fan", 1, [0], [1])  # perfect
    )
    kw = table(*rows)
    kw["domain"][3] = "whatever"  # 2020 ignores the domain
    res = score_dcase(**kw, year=2020)
    assert isinstance(res, DcaseResult) and res.year == 2020

    auc_a, pauc_a = 500 / 6, mcclish(0.05)
    pauc_inv = mcclish(0.0)
    assert [(s["subset"], s["machine"], s["section"]) for s in res.sections] == [
        ("dev", "fan", 0),
        ("dev", "fan", 2),
        ("dev", "pump", 0),
        ("eval", "fan", 1),
    ]
    fan2 = res.sections[1]
    assert fan2 == {
        "subset": "dev",
        "machine": "fan",
        "section": 2,
        "n_test": 5,
        "auc": pytest.approx(auc_a, rel=1e-12),
        "pauc": pytest.approx(pauc_a, rel=1e-12),
        "score": pytest.approx((auc_a + pauc_a) / 2, rel=1e-12),
    }
    assert res.sections[0]["score"] == pytest.approx(100.0)
    assert res.sections[2]["auc"] == pytest.approx(0.0, abs=1e-12)
    assert res.sections[2]["pauc"] == pytest.approx(pauc_inv, rel=1e-12)

    fan = ((auc_a + pauc_a) / 2 + 100) / 2
    pump = pauc_inv / 2
    assert res.machines == [
        {"subset": "dev", "machine": "fan", "score": pytest.approx(fan, rel=1e-12)},
        {"subset": "dev", "machine": "pump", "score": pytest.approx(pump, rel=1e-12)},
        {"subset": "eval", "machine": "fan", "score": pytest.approx(100.0, rel=1e-12)},
    ]
    dev = (fan + pump) / 2
    assert res.subsets == {"dev": pytest.approx(dev, rel=1e-12), "eval": pytest.approx(100.0)}
    assert res.score == pytest.approx((dev + 100) / 2, rel=1e-12)

    # clip scores: the section's distances z-normalised over its test clips (every year)
    expected_clips = [math.nan] + znorm([dist(t) for t in [0, 1, 3, 2, 4]])
    np.testing.assert_allclose(res.clip_scores[:6], expected_clips, rtol=0, atol=1e-12)
    assert np.mean(res.clip_scores[1:6]) == pytest.approx(0, abs=1e-12)
    assert np.std(res.clip_scores[1:6]) == pytest.approx(1, rel=1e-12)
    assert np.isnan(res.clip_scores[np.array(kw["split"]) == "train"]).all()
    assert not np.isnan(res.clip_scores[np.array(kw["split"]) == "test"]).any()


def test_pauc_is_mcclish_standardised_with_interpolation():
    # scores: a normal and an anomaly tied at the top (t = 5), then an anomaly (t = 4), then
    # normals t = 1, 2, 3. ROC: (0, 0) -> (1/4, 1/2) diagonal (tie) -> (1/4, 1) -> (1, 1).
    # Raw partial area up to FPR 0.1: triangle with TPR(0.1) = 0.2 -> A = 0.1 * 0.2 / 2 = 0.01.
    # AUC: tied anomaly beats 3 normals + half a tie = 3.5, the other beats 3 -> 6.5 / 8.
    res = score_dcase(**table(*section_2020("dev", "valve", 4, [5, 1, 2, 3], [5, 4])), year=2020)
    sec = res.sections[0]
    assert sec["pauc"] == pytest.approx(mcclish(0.01), rel=1e-12)
    assert sec["pauc"] == pytest.approx(100 * (0.5 * (1 + (0.01 - 0.005) / 0.095)), rel=1e-12)
    assert sec["auc"] == pytest.approx(100 * 6.5 / 8, rel=1e-12)
    # a single subset: its score is the dataset score
    assert res.score == res.subsets["dev"] == sec["score"]
    assert list(res.subsets) == ["dev"]


def test_2021_by_hand_one_bank_with_both_domains():
    # 3-D: source train clip along x, target train clip along z; test rays in the x-y plane
    # (orthogonal to z) have their nearest bank item on x.
    def xy(t):
        return [1.0, t, 0.0]

    rows = [
        ("eval", "train", "gearbox", 3, "source", "normal", [3.0, 0.0, 0.0]),
        ("eval", "train", "gearbox", 3, "target", "normal", [0.0, 0.0, 1.0]),
    ]
    rows += [("eval", "test", "gearbox", 3, "source", "normal", xy(t)) for t in [0, 1, 3]]
    rows += [("eval", "test", "gearbox", 3, "source", "anomaly", xy(t)) for t in [2, 4]]
    # target domain: the normal sits on the target train clip (distance 0 only because the
    # bank holds target clips too); anomalies at distance 1 - 1/sqrt(5) and 1.
    rows += [
        ("eval", "test", "gearbox", 3, "target", "normal", [0.0, 0.0, 5.0]),
        ("eval", "test", "gearbox", 3, "target", "anomaly", [1.0, 2.0, 0.0]),
        ("eval", "test", "gearbox", 3, "target", "anomaly", [0.0, 1.0, 0.0]),
    ]
    res = score_dcase(**table(*rows), year=2021)
    sec = res.sections[0]
    four = [500 / 6, mcclish(0.05), 100.0, 100.0]
    assert [sec[k] for k in ("auc_source", "pauc_source", "auc_target", "pauc_target")] == (
        pytest.approx(four, rel=1e-12)
    )
    assert set(sec) == {
        "subset", "machine", "section", "n_test", "auc_source", "pauc_source", "auc_target",
        "pauc_target", "score",
    }  # fmt: skip
    h = 4 / sum(1 / x for x in four)
    assert sec["score"] == pytest.approx(h, rel=1e-12)
    assert res.machines[0]["score"] == pytest.approx(h, rel=1e-12)
    assert res.subsets == {"eval": pytest.approx(h, rel=1e-12)}
    assert res.score == pytest.approx(h, rel=1e-12)
    np.testing.assert_allclose(
        res.clip_scores[2:],
        znorm([dist(0), dist(1), dist(3), dist(2), dist(4), 0.0, 1 - 1 / math.sqrt(5), 1.0]),
        rtol=0,
        atol=1e-12,
    )


def test_2021_hmean_over_sections_machines_subsets():
    def sec_rows(subset, mach, sec, normals, anomalies):
        out = []
        for dom in ("source", "target"):
            out += [(subset, "train", mach, sec, dom, "normal", [1.0, 0.0])]
            out += [(subset, "test", mach, sec, dom, "normal", ray(t)) for t in normals]
            out += [(subset, "test", mach, sec, dom, "anomaly", ray(t)) for t in anomalies]
        return out

    rows = (
        sec_rows("dev", "fan", 0, [0, 1, 3], [2, 4])  # (500/6, A=.05) in both domains
        + sec_rows("dev", "fan", 1, [0], [1])  # 100 everywhere
        + sec_rows("eval", "pump", 0, [0, 1, 3], [2, 4])
    )
    res = score_dcase(**table(*rows), year=2021)
    s0 = 4 / (2 / (500 / 6) + 2 / mcclish(0.05))
    fan = 2 / (1 / s0 + 1 / 100)
    assert [s["score"] for s in res.sections] == pytest.approx([s0, 100.0, s0], rel=1e-12)
    assert res.subsets == {"dev": pytest.approx(fan), "eval": pytest.approx(s0)}
    assert res.score == pytest.approx(2 / (1 / fan + 1 / s0), rel=1e-12)


def test_2022_by_hand_two_banks_zscore_min():
    rows = [
        ("dev", "train", "bearing", 1, "source", "normal", [2.0, 0.0, 0.0]),
        ("dev", "train", "bearing", 1, "target", "normal", [0.0, 0.0, 1.0]),
        ("dev", "test", "bearing", 1, "source", "normal", [1.0, 0.0, 0.0]),  # a
        ("dev", "test", "bearing", 1, "target", "normal", [0.0, 0.0, 1.0]),  # b
        ("dev", "test", "bearing", 1, "source", "anomaly", [0.0, 1.0, 0.0]),  # c
        ("dev", "test", "bearing", 1, "target", "anomaly", [1.0, 1.0, 1.0]),  # d
        ("dev", "test", "bearing", 1, "source", "normal", [1.0, 2.0, 0.0]),  # e
    ]
    r3, r5 = 1 - 1 / math.sqrt(3), 1 - 1 / math.sqrt(5)
    d_src = [0.0, 1.0, 1.0, r3, r5]  # distances of a..e to the source bank
    d_tgt = [1.0, 0.0, 1.0, r3, 1.0]  # ... and to the target bank

    def z(v):
        mu = sum(v) / len(v)
        sd = math.sqrt(sum((x - mu) ** 2 for x in v) / len(v))  # population std
        return [(x - mu) / sd for x in v]

    clip = [min(p, q) for p, q in zip(z(d_src), z(d_tgt), strict=True)]
    # clip ~ a -1.575, b -1.674, c 0.772, d -0.641, e -0.112
    # AUC_source on {a, e | c, d}: c beats both, d beats a only -> 3/4
    # AUC_target on {b | c, d}: 1
    # pAUC on all: c (anomaly), e (normal), d, ... -> ROC (0, .5) -> (1/3, .5): A = .05
    res = score_dcase(**table(*rows), year=2022)
    np.testing.assert_allclose(res.clip_scores[2:], clip, rtol=0, atol=1e-12)
    sec = res.sections[0]
    assert sec["auc_source"] == pytest.approx(75.0, rel=1e-12)
    assert sec["auc_target"] == pytest.approx(100.0, rel=1e-12)
    assert sec["pauc"] == pytest.approx(mcclish(0.05), rel=1e-12)
    h = 3 / (1 / 75 + 1 / 100 + 1 / mcclish(0.05))
    assert sec["score"] == pytest.approx(h, rel=1e-12)
    assert set(sec) == {
        "subset", "machine", "section", "n_test", "auc_source", "auc_target", "pauc", "score",
    }  # fmt: skip
    assert sec["n_test"] == 5
    assert res.score == pytest.approx(h, rel=1e-12)


# --------------------------------------------------------------------------------------------
# official-style reference on random data
# --------------------------------------------------------------------------------------------

LAYOUT = {
    "dev": {"fan": [0, 2, 1], "ToyCar": [3], "valve": [0, 1]},
    "eval": {"slider": [5, 4], "fan": [1]},
}


def random_dataset(year: int, seed: int) -> pd.DataFrame:
    """Random embeddings with several subsets, machines, sections and domains, rows shuffled."""
    rng = np.random.default_rng(seed)
    dim = 6
    recs, embs = [], []
    for subset, machines in LAYOUT.items():
        for mach, secs in machines.items():
            for sec in secs:
                centre = rng.normal(size=dim)
                shift = rng.normal(size=dim)
                doms = ("source",) if year == 2020 else ("source", "target")
                for dom in doms:
                    dom_centre = centre + (0.0 if dom == "source" else rng.normal(size=dim))
                    n_train = 9 if dom == "source" else 3
                    for split, label, n, off in [
                        ("train", "normal", n_train, 0.0),
                        ("test", "normal", int(rng.integers(4, 8)), 0.0),
                        ("test", "anomaly", int(rng.integers(3, 7)), 1.0),
                    ]:
                        for _ in range(n):
                            recs.append((subset, split, mach, sec, dom, label))
                            embs.append(dom_centre + off * shift + 0.7 * rng.normal(size=dim))
    df = pd.DataFrame(recs, columns=["subset", "split", "machine", "section", "domain", "label"])
    df["emb"] = list(np.array(embs))
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def knn_score(bank: np.ndarray, test: np.ndarray) -> np.ndarray:
    clf = NearestNeighbors(n_neighbors=1, metric="cosine")
    clf.fit(bank)
    return clf.kneighbors(test, 1)[0].mean(axis=-1)


def reference(df: pd.DataFrame, year: int) -> dict:
    """Official-harness-style computation (without its rounding)."""
    emb = np.stack(df["emb"].to_numpy())
    df = df.assign(status=(df["label"] == "anomaly").astype(int), score=np.nan)
    sections, machines, subsets = {}, {}, {}
    for setn in ["dev", "eval"]:
        sdf = df.loc[df["subset"] == setn]
        if sdf.empty:
            continue
        mt_scores = []
        for mt in pd.unique(df["machine"]):
            mdf = sdf.loc[sdf["machine"] == mt]
            if mdf.empty:
                continue
            sec_scores = []
            for sec in np.unique(mdf["section"]):
                train = mdf.loc[(mdf["section"] == sec) & (mdf["split"] == "train")]
                test = mdf.loc[(mdf["section"] == sec) & (mdf["split"] == "test")]
                test_emb = emb[test.index]
                if year <= 2021:
                    s = knn_score(emb[train.index], test_emb)
                    score = (s - np.mean(s)) / np.std(s)
                else:
                    zs = []
                    for dom in ["source", "target"]:
                        s = knn_score(emb[train.loc[train["domain"] == dom].index], test_emb)
                        zs.append((s - np.mean(s)) / np.std(s))
                    score = np.min(np.stack(zs), axis=0)
                df.loc[test.index, "score"] = score
                d = df.loc[test.index]
                if year == 2020:
                    auc = roc_auc_score(d["status"], d["score"]) * 100
                    pauc = roc_auc_score(d["status"], d["score"], max_fpr=0.1) * 100
                    fig = {"auc": auc, "pauc": pauc, "score": np.array([auc, pauc]).mean()}
                elif year == 2021:
                    fig = {}
                    for dom in ["source", "target"]:
                        dd = d.loc[d["domain"] == dom]
                        fig[f"auc_{dom}"] = roc_auc_score(dd["status"], dd["score"]) * 100
                        fig[f"pauc_{dom}"] = (
                            roc_auc_score(dd["status"], dd["score"], max_fpr=0.1) * 100
                        )
                    fig["score"] = hmean(list(fig.values()))
                else:
                    d_sou = d.loc[(d["domain"] == "source") | (d["status"] == 1)]
                    d_tar = d.loc[(d["domain"] == "target") | (d["status"] == 1)]
                    fig = {
                        "auc_source": roc_auc_score(d_sou["status"], d_sou["score"]) * 100,
                        "auc_target": roc_auc_score(d_tar["status"], d_tar["score"]) * 100,
                        "pauc": roc_auc_score(d["status"], d["score"], max_fpr=0.1) * 100,
                    }
                    fig["score"] = hmean(list(fig.values()))
                fig["n_test"] = len(d)
                sections[(setn, mt, int(sec))] = fig
                sec_scores.append(fig["score"])
            machines[(setn, mt)] = np.mean(sec_scores) if year == 2020 else hmean(sec_scores)
            mt_scores.append(machines[(setn, mt)])
        subsets[setn] = np.mean(mt_scores) if year == 2020 else hmean(mt_scores)
    total = np.mean(list(subsets.values())) if year == 2020 else hmean(list(subsets.values()))
    return {
        "sections": sections,
        "machines": machines,
        "subsets": subsets,
        "score": total,
        "clip_scores": df["score"].to_numpy(),
    }


def run(df: pd.DataFrame, year: int) -> DcaseResult:
    return score_dcase(
        np.stack(df["emb"].to_numpy()),
        subset=df["subset"].tolist(),
        split=df["split"].tolist(),
        machine=df["machine"].tolist(),
        section=df["section"].to_numpy(),
        domain=df["domain"].tolist(),
        label=df["label"].tolist(),
        year=year,
    )


def keyed(res: DcaseResult) -> tuple[dict, dict]:
    secs = {
        (s["subset"], s["machine"], s["section"]): {
            k: v for k, v in s.items() if k not in ("subset", "machine", "section")
        }
        for s in res.sections
    }
    machs = {(m["subset"], m["machine"]): m["score"] for m in res.machines}
    return secs, machs


@pytest.mark.parametrize("year", [2020, 2021, 2022, 2023, 2024, 2025])
def test_matches_official_style_reference(year):
    df = random_dataset(year, seed=year)
    ref = reference(df, year)
    res = run(df, year)

    secs, machs = keyed(res)
    assert secs.keys() == ref["sections"].keys()
    for key, fig in ref["sections"].items():
        assert secs[key] == pytest.approx(fig, rel=1e-9), key
    assert machs == pytest.approx(ref["machines"], rel=1e-9)
    assert res.subsets == pytest.approx(ref["subsets"], rel=1e-9)
    assert res.score == pytest.approx(ref["score"], rel=1e-9)
    np.testing.assert_allclose(res.clip_scores, ref["clip_scores"], rtol=0, atol=1e-9)
    # the data is not trivial: section figures are spread, not all 100
    assert len({round(s["score"], 6) for s in res.sections}) > 3 and res.score < 100

    # ordering: subset (dev, eval), machine by first appearance, section ascending
    first = list(dict.fromkeys(df["machine"]))
    order = sorted(secs, key=lambda k: (["dev", "eval"].index(k[0]), first.index(k[1]), k[2]))
    assert [(s["subset"], s["machine"], s["section"]) for s in res.sections] == order
    assert [(m["subset"], m["machine"]) for m in res.machines] == list(
        dict.fromkeys(k[:2] for k in order)
    )
    for s in res.sections:
        assert type(s["section"]) is int and type(s["n_test"]) is int
        assert all(
            isinstance(v, float) and math.isfinite(v)
            for k, v in s.items()
            if k not in ("subset", "machine", "section", "n_test")
        )


@pytest.mark.parametrize("year", [2020, 2021, 2024])
def test_single_subset_scores_itself(year):
    df = random_dataset(year, seed=7)
    res = run(df.loc[df["subset"] == "eval"].reset_index(drop=True), year)
    assert list(res.subsets) == ["eval"]
    assert res.score == pytest.approx(res.subsets["eval"], rel=1e-15)
    full = run(df, year)
    assert res.subsets["eval"] == pytest.approx(full.subsets["eval"], rel=1e-12)


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("year", [2020, 2021, 2023])
def test_invariant_to_row_permutation(year):
    df = random_dataset(year, seed=100 + year)
    res = run(df, year)
    perm = np.random.default_rng(5).permutation(len(df))
    res_p = run(df.iloc[perm].reset_index(drop=True), year)

    secs, machs = keyed(res)
    secs_p, machs_p = keyed(res_p)
    assert secs_p.keys() == secs.keys()
    for key in secs:
        assert secs_p[key] == pytest.approx(secs[key], rel=1e-12)
    assert machs_p == pytest.approx(machs, rel=1e-12)
    assert res_p.subsets == pytest.approx(res.subsets, rel=1e-12)
    assert res_p.score == pytest.approx(res.score, rel=1e-12)
    np.testing.assert_allclose(res_p.clip_scores, res.clip_scores[perm], rtol=0, atol=1e-12)


def test_clip_scores_nan_exactly_on_train_rows():
    df = random_dataset(2022, seed=3)
    res = run(df, 2022)
    assert res.clip_scores.shape == (len(df),) and res.clip_scores.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(res.clip_scores), (df["split"] == "train").to_numpy())


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def good_2022_rows(sec=7):
    rows = []
    for dom, v in (("source", [1.0, 0.0]), ("target", [0.0, 1.0])):
        rows += [("dev", "train", "fan", sec, dom, "normal", v)]
        rows += [("dev", "test", "fan", sec, dom, "normal", [v[0] + 0.1, v[1] + 0.2])]
        rows += [("dev", "test", "fan", sec, dom, "anomaly", [v[0] + 0.5, v[1] + 0.9])]
    return rows


def test_good_2022_rows_score():
    res = score_dcase(**table(*good_2022_rows()), year=2022)
    assert math.isfinite(res.score)


def test_error_empty_bank_2020():
    rows = section_2020("dev", "fan", 0, [0], [1]) + [
        ("dev", "test", "fan", 6, "source", "normal", [1.0, 0.0]),
        ("dev", "test", "fan", 6, "source", "anomaly", [1.0, 1.0]),
    ]
    with pytest.raises(RMISError, match=r"machine 'fan', section 6: the memory bank is empty"):
        score_dcase(**table(*rows), year=2020)


@pytest.mark.parametrize("dom", ["source", "target"])
def test_error_empty_bank_2022(dom):
    rows = [r for r in good_2022_rows() if not (r[1] == "train" and r[4] == dom)]
    with pytest.raises(RMISError, match=rf"section 7: the {dom} memory bank is empty"):
        score_dcase(**table(*rows), year=2023)


def test_error_single_class_test_set():
    rows = [r for r in section_2020("eval", "pump", 3, [0, 1], [2]) if r[5] == "normal"]
    with pytest.raises(RMISError, match=r"subset 'eval', machine 'pump', section 3: .*all normal"):
        score_dcase(**table(*rows), year=2020)


def test_error_single_class_domain_2021():
    rows = [r[:4] + ("target",) + r[5:] for r in section_2020("dev", "pump", 2, [0, 1], [2])]
    rows += [("dev", "test", "pump", 2, "source", "normal", [1.0, 3.0])]
    with pytest.raises(RMISError, match=r"section 2: the source-domain test clips are all normal"):
        score_dcase(**table(*rows), year=2021)


def test_error_no_source_normals_2022():
    rows = [
        r
        for r in good_2022_rows()
        if not (r[1] == "test" and r[4] == "source" and r[5] == "normal")
    ]
    with pytest.raises(RMISError, match=r"section 7: the source-domain normal test clips plus"):
        score_dcase(**table(*rows), year=2024)


def test_error_constant_scores_2022():
    rows = [r[:6] + ([1.0, 1.0],) if r[1] == "test" else r for r in good_2022_rows()]
    with pytest.raises(RMISError, match=r"section 7: the source-bank scores are constant"):
        score_dcase(**table(*rows), year=2025)


def test_error_constant_scores_2020():
    rows = section_2020("dev", "fan", 0, [1], [1])
    with pytest.raises(RMISError, match=r"section 0: the anomaly scores are constant"):
        score_dcase(**table(*rows), year=2020)


def test_error_anomalous_train_clip():
    rows = good_2022_rows()
    rows[0] = rows[0][:5] + ("anomaly",) + rows[0][6:]
    with pytest.raises(RMISError, match=r"section 7: 1 train clip\(s\) are labelled 'anomaly'"):
        score_dcase(**table(*rows), year=2022)


def test_error_train_without_test():
    rows = good_2022_rows() + [("dev", "train", "fan", 9, "source", "normal", [1.0, 0.0])]
    with pytest.raises(RMISError, match=r"section 9: has 1 train clips but no test clips"):
        score_dcase(**table(*rows), year=2022)


@pytest.mark.parametrize(
    ("column", "value"),
    [("subset", "develop"), ("split", "val"), ("domain", "src"), ("label", "abnormal")],
)
def test_error_unknown_values(column, value):
    kw = table(*good_2022_rows())
    kw[column][2] = value
    with pytest.raises(RMISError, match=rf"unknown value\(s\) in `{column}`: '{value}'"):
        score_dcase(**kw, year=2022)


@pytest.mark.parametrize("year", [2019, 2026, "2022", 2022.0, True])
def test_error_bad_year(year):
    with pytest.raises(RMISError, match="year must be one of 2020..2025"):
        score_dcase(**table(*good_2022_rows()), year=year)


@pytest.mark.parametrize("column", ["subset", "split", "machine", "section", "domain", "label"])
def test_error_mismatched_lengths(column):
    kw = table(*good_2022_rows())
    kw[column] = kw[column][:-1]
    with pytest.raises(RMISError, match=rf"`{column}` has 5 entries but embeddings has 6 rows"):
        score_dcase(**kw, year=2022)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_error_non_finite_embeddings(bad):
    kw = table(*good_2022_rows())
    kw["embeddings"][3, 1] = bad
    with pytest.raises(RMISError, match=r"NaN or Inf .* first row 3 .*machine 'fan', section 7"):
        score_dcase(**kw, year=2022)


def test_error_bad_shapes_and_sections():
    kw = table(*good_2022_rows())
    with pytest.raises(RMISError, match="2-D"):
        score_dcase(**{**kw, "embeddings": kw["embeddings"][:, 0]}, year=2022)
    with pytest.raises(RMISError, match="must hold integers"):
        score_dcase(**{**kw, "section": [7.5] * 6}, year=2022)
    with pytest.raises(RMISError, match="must hold integers"):
        score_dcase(**{**kw, "section": ["section_07"] * 6}, year=2022)
    # integral floats are accepted as section numbers
    res = score_dcase(**{**kw, "section": [7.0] * 6}, year=2022)
    assert res.sections[0]["section"] == 7


# --------------------------------------------------------------------------------------------
# checks without embeddings (preflight)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "year", "message"),
    [
        (
            section_2020("dev", "fan", 0, [0], [1])
            + [
                ("dev", "test", "fan", 6, "source", "normal", [1.0, 0.0]),
                ("dev", "test", "fan", 6, "source", "anomaly", [1.0, 1.0]),
            ],
            2020,
            r"section 6: the memory bank is empty",
        ),
        (
            [r for r in good_2022_rows() if not (r[1] == "train" and r[4] == "target")],
            2023,
            r"section 7: the target memory bank is empty",
        ),
        (
            [r for r in section_2020("eval", "pump", 3, [0, 1], [2]) if r[5] == "normal"],
            2020,
            r"section 3: .*all normal",
        ),
        (
            [r[:4] + ("target",) + r[5:] for r in section_2020("dev", "pump", 2, [0, 1], [2])]
            + [("dev", "test", "pump", 2, "source", "normal", [1.0, 3.0])],
            2021,
            r"section 2: the source-domain test clips are all normal",
        ),
        (
            good_2022_rows() + [("dev", "train", "fan", 9, "source", "normal", [1.0, 0.0])],
            2022,
            r"section 9: has 1 train clips but no test clips",
        ),
        (
            [r[:5] + ("anomaly",) + r[6:] if i == 0 else r for i, r in enumerate(good_2022_rows())],
            2024,
            r"section 7: 1 train clip\(s\) are labelled 'anomaly'",
        ),
    ],
)
def test_check_dcase_layout_needs_no_embeddings(rows, year, message):
    kw = table(*rows)
    del kw["embeddings"]
    with pytest.raises(RMISError, match=message):
        dcase.check_dcase_layout(**kw, year=year)


def test_check_dcase_layout_accepts_a_scorable_table():
    kw = table(*good_2022_rows())
    del kw["embeddings"]
    assert dcase.check_dcase_layout(**kw, year=2022) is None


# --------------------------------------------------------------------------------------------
# the official harness's rounding (--compat rmis-official)
# --------------------------------------------------------------------------------------------


def sec(subset, machine, section, score):
    return {"subset": subset, "machine": machine, "section": section, "score": score}


def test_aggregate_official_rounding_2020_machines_rounded_before_the_subset_mean():
    sections = [
        sec("dev", "fan", 0, 200 / 3),
        sec("dev", "fan", 2, 70.0),  # fan = 205/3 = 68.333... -> 68.33
        sec("dev", "pump", 0, 33.3349),  # -> 33.33
        sec("eval", "fan", 1, 100 / 3),  # -> 33.33
    ]
    out, machines, subsets, score = dcase.aggregate(sections, 2020)
    assert [m["score"] for m in machines] == pytest.approx([205 / 3, 33.3349, 100 / 3])
    assert subsets["dev"] == pytest.approx((205 / 3 + 33.3349) / 2, rel=1e-12)
    assert score == pytest.approx(((205 / 3 + 33.3349) / 2 + 100 / 3) / 2, rel=1e-12)
    assert out == sections

    out, machines, subsets, score = dcase.aggregate(sections, 2020, official_rounding=True)
    assert [m["score"] for m in machines] == [68.33, 33.33, 33.33]
    assert subsets == {"dev": pytest.approx(50.83, abs=1e-12), "eval": 33.33}
    assert score == pytest.approx((50.83 + 33.33) / 2, abs=1e-12)  # 42.08, default 42.0841
    assert [s["score"] for s in out] == [66.67, 70.0, 33.33, 33.33]
    assert sections[0]["score"] == 200 / 3  # the input is not modified


def test_aggregate_official_rounding_2021_harmonic():
    sections = [
        sec("dev", "fan", 0, 80.0),
        sec("dev", "fan", 1, 60.0),
        sec("dev", "pump", 0, 90.004),
    ]
    _, machines, subsets, score = dcase.aggregate(sections, 2021, official_rounding=True)
    # fan: hmean(80, 60) = 68.5714... -> 68.57; pump 90.004 -> 90.0
    assert [m["score"] for m in machines] == [68.57, 90.0]
    assert subsets["dev"] == pytest.approx(2 / (1 / 68.57 + 1 / 90.0), rel=1e-12)
    assert score == subsets["dev"]
    _, _, default, _ = dcase.aggregate(sections, 2021)
    assert default["dev"] == pytest.approx(2 / (1 / (2 / (1 / 80 + 1 / 60)) + 1 / 90.004))


def test_aggregate_official_rounding_2023_subset_over_all_sections():
    # 2023-2025: the official subset figure is the hmean over ALL the subset's sections,
    # rounded; the dataset score is the hmean of the rounded subset figures.
    sections = [
        sec("dev", "fan", 0, 80.0),
        sec("dev", "fan", 1, 60.0),
        sec("dev", "valve", 0, 90.004),
        sec("eval", "pump", 0, 55.557),
    ]
    _, machines, subsets, score = dcase.aggregate(sections, 2023, official_rounding=True)
    dev = 3 / (1 / 80 + 1 / 60 + 1 / 90.004)  # 74.4836...
    assert subsets == {"dev": round(dev, 2), "eval": 55.56}
    assert subsets["dev"] == 74.48
    assert score == pytest.approx(2 / (1 / 74.48 + 1 / 55.56), rel=1e-12)
    assert [m["score"] for m in machines] == [68.57, 90.0, 55.56]
    _, _, default, _ = dcase.aggregate(sections, 2023)
    assert default["dev"] == pytest.approx(2 / (1 / (2 / (1 / 80 + 1 / 60)) + 1 / 90.004))


def test_score_dcase_official_rounding_2020_by_hand():
    rows = (
        section_2020("dev", "fan", 2, [0, 1, 3], [2, 4])  # AUC 83.33.., pAUC 73.68..
        + section_2020("dev", "fan", 0, [0, 1], [2, 3])  # 100
        + section_2020("dev", "pump", 0, [2, 3], [0, 1])  # AUC 0, pAUC 47.37..
        + section_2020("eval", "fan", 1, [0], [1])  # 100
    )
    plain = score_dcase(**table(*rows), year=2020)
    res = score_dcase(**table(*rows), year=2020, official_rounding=True)
    fan2 = res.sections[1]
    assert (fan2["auc"], fan2["pauc"], fan2["score"]) == (83.33, 73.68, 78.51)
    # fan = ((83.333 + 73.684) / 2 + 100) / 2 = 89.2544 -> 89.25; pump 23.684 -> 23.68
    assert [m["score"] for m in res.machines] == [89.25, 23.68, 100.0]
    assert res.subsets == {"dev": pytest.approx((89.25 + 23.68) / 2, abs=1e-12), "eval": 100.0}
    assert res.score == pytest.approx(((89.25 + 23.68) / 2 + 100) / 2, abs=1e-12)  # 78.2325
    assert plain.score == pytest.approx(78.2346, abs=1e-4)  # unrounded by default
    np.testing.assert_array_equal(res.clip_scores, plain.clip_scores)
