"""The transformer chapter's measures: the LM's memorized bits and ceiling, bf16 training,
the summary's maximum, and the chapter's export."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from capq_lib.core.validate import ConfigError
from capq_lib.experiments import lm_capacity
from capq_lib.experiments.lm_capacity import LMCapacityStudy, ceiling_bits, lm_summary
from capq_lib.nets.transformer import TransformerSpec

from .conftest import run_capq


def test_the_ceiling_counts_what_shared_contexts_leave_unknowable():
    # V = 2, S = 2: four sequences, all distinct. Token 1 of each is one of two values with
    # frequency 1/2 (one bit of cost); token 2 is then determined by token 1's group of
    # two sequences: one bit again where the group holds two different second tokens.
    seqs = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    ceiling = ceiling_bits(seqs, 2)
    assert np.allclose(ceiling, 0.0)  # 2 bits per sequence, all of them unknowable
    # a unique context makes the token certain: [[0, 1], [1, 1]] -> token 2 is known
    assert np.allclose(ceiling_bits(torch.tensor([[0, 1], [1, 1]]), 2), [1.0, 1.0])
    # with N much below V^t everything is memorizable: the ceiling is S log2 V per sequence
    rnd = lm_capacity.random_sequences(10, 8, 64, seed=1)
    assert np.allclose(ceiling_bits(rnd, 64), 8 * 6 - np.log2(10 / np.array(
        [(rnd[:, 0] == rnd[k, 0]).sum().item() for k in range(10)])))


def test_memorized_bits_are_the_sequence_bits_less_the_nll_at_least_zero():
    spec = TransformerSpec(1, 8, 2, steps=4, vocab=16)
    from capq_lib.engine.population import StackedTransformer
    from capq_lib.nets.transformer import build_transformer

    model = StackedTransformer([build_transformer(spec, 0)], torch.device("cpu"))
    data = lm_capacity.random_sequences(5, 4, 16, seed=0).unsqueeze(0)
    got = lm_capacity.memorized_bits(model, data, [5])[0]
    with torch.no_grad():
        logits = model.forward(data)
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 2), data.flatten(),
                                                reduction="none").view(5, 4).sum(1)
    expect = (4 * math.log2(16) - nll / math.log(2)).clamp(min=0).sum().item()
    assert got == pytest.approx(expect, rel=1e-5)
    assert got >= 0


def test_bf16_training_keeps_every_weight_a_bf16_number():
    spec = TransformerSpec(1, 8, 2, steps=4, vocab=16)
    members = [lm_capacity.Member(8, 1, 1), lm_capacity.Member(8, 2, 2)]
    t = lm_capacity.train_lms(spec, members, 5, 0.01, 4, torch.device("cpu"), "bfloat16")
    for p in t.model.params:
        assert torch.equal(p.detach(), p.detach().to(torch.bfloat16).float())
    f = lm_capacity.train_lms(spec, members, 5, 0.01, 4, torch.device("cpu"), "float32")
    assert any(not torch.equal(p.detach(), p.detach().to(torch.bfloat16).float())
               for p in f.model.params)


def lm_rows(means, ceiling=1e6):
    rows = []
    for n, m in means.items():
        for s in range(3):
            rows.append({"model": "1x8", "precision": "float32", "params": 1000, "layers": 1,
                         "width": 8, "vocab": 64, "seq_len": 16, "n_sequences": n, "seed": s,
                         "entropy_bits": n * 96.0, "ceiling_bits": ceiling,
                         "memorized_bits": m + s, "memorized_bits_half": m + s})
    return pd.DataFrame(rows)


def test_a_peak_is_a_maximum_only_bracketed_and_short_of_the_ceiling():
    s = lm_summary(lm_rows({10: 500, 20: 900, 40: 700})).iloc[0]
    assert s.n_at_max == 20 and s.bracketed and not s.at_ceiling and s.converged
    assert s.bits_per_param == pytest.approx(0.901)
    edge = lm_summary(lm_rows({10: 500, 20: 700, 40: 900})).iloc[0]
    assert not edge.bracketed  # the largest N holds the most
    full = lm_summary(lm_rows({10: 500, 20: 900, 40: 700}, ceiling=901)).iloc[0]
    assert full.at_ceiling and not full.bracketed
    grown = lm_rows({10: 500, 20: 900, 40: 700})
    grown["memorized_bits_half"] = grown.memorized_bits / 2
    assert not lm_summary(grown).iloc[0].converged  # the second half still added bits


def test_bad_lm_settings_name_the_parameter():
    with pytest.raises(ConfigError, match="bf16_models must be among models"):
        LMCapacityStudy(models=["1x8"], bf16_models=["1x16"])
    with pytest.raises(ConfigError, match="entropy_fractions must rise"):
        LMCapacityStudy(entropy_fractions=[1.0, 0.5])
    with pytest.raises(ConfigError, match="width must be a multiple of heads"):
        LMCapacityStudy(models=["1x9"], bf16_models=[])
    with pytest.raises(ConfigError, match="shapes must be \\[vocab, seq_len\\] pairs"):
        LMCapacityStudy(shapes=[[64]])
    with pytest.raises(ConfigError, match="shapes vocab must be an integer"):
        LMCapacityStudy(shapes=[[1, 16]])
    with pytest.raises(ConfigError, match="shapes must differ"):
        LMCapacityStudy(vocab=64, seq_len=16, shapes=[[64, 16]])


def test_further_data_shapes_label_their_own_nets_and_data():
    """Several vocabularies and lengths: each (V, S) gets nets of its own, labelled, with
    its own N grid (N S log2 V is the same share of 3.6 bits x P) and its own cache key;
    the first data's labels, keys and N are those of a study without shapes."""
    plain = LMCapacityStudy(models=["1x8"], bf16_models=[], vocab=64, seq_len=16)
    more = LMCapacityStudy(models=["1x8"], bf16_models=[], vocab=64, seq_len=16,
                           shapes=[[256, 8]])
    assert more.labels() == ["1x8", "1x8 V256 S8"]
    assert more.trainings() == [("1x8", "float32"), ("1x8 V256 S8", "float32")]
    spec = more.spec("1x8 V256 S8")
    assert (spec.vocab, spec.steps, spec.width) == (256, 8, 8)
    assert more.sequence_bits("1x8 V256 S8") == 8 * 8
    assert more.n_grid("1x8") == plain.n_grid("1x8")
    assert lm_capacity._config(more, "1x8", "float32") == \
        lm_capacity._config(plain, "1x8", "float32")
    other = lm_capacity._config(more, "1x8 V256 S8", "float32")["study"]
    assert (other["vocab"], other["seq_len"]) == (256, 8)
    with pytest.raises(ConfigError, match="an LM label is"):
        more.spec("1x8 256 8")


@pytest.mark.slow
def test_the_chapters_export_has_both_measures_and_the_quantization(smoke_book):
    rows = json.loads(run_capq("results", "transformer-capacity", "--profile", "smoke",
                               "--format", "json", results=smoke_book / "results").stdout)
    caps = [r for r in rows if r["record"] == "capacity"]
    assert {r["measure"] for r in caps} == {"classifier", "lm"}
    for r in caps:
        for field in ("bracketed", "replicates", "capacity_bits_mean", "capacity_bits_sd",
                      "bits_per_param", "params"):
            assert field in r, (r["measure"], field)
    lms = [r for r in caps if r["measure"] == "lm"]
    assert {"memorized_bits", "ceiling_bits", "precision", "entropy_bits", "vocab",
            "seq_len"} <= set(lms[0])
    assert {r["precision"] for r in lms} == {"float32", "bfloat16"}
    # the smoke profile's further data (V = 16, S = 8): nets of their own, labelled
    other = [r for r in lms if r["model"].endswith(" V16 S8")]
    assert other and all((r["vocab"], r["seq_len"]) == (16, 8) for r in other)
    quant = [r for r in rows if r["record"] == "quantization"]
    for measure in ("lm", "classifier"):
        mine = [r for r in quant if r["measure"] == measure]
        assert {r["route"] for r in mine} >= {"direct", "progressive"}
        assert {r["bits"] for r in mine if r["bits"] is not None} == {8, 4, 2}


def test_the_families_bits_table_shows_the_number_the_claims_judge():
    """Per family the model that needed the most bits, with the same estimate as the
    quantization claim; a family with no records reads 'not measured'."""
    from capq_lib.report import claims, scorecard

    def rows(family, model, bits, definition="N_at_max x 1", **extra):
        return [{"family": family, "model": model, "definition": definition,
                 "fewest_lossless_bits": b, "widest": 12, "seed": s, **extra}
                for s, b in enumerate(bits)]

    lossless = pd.DataFrame(rows("fc", "1x16", [6, 6, 7, 6]) + rows("fc", "1x32", [7, 8, 7, 7])
                            + rows("rnn", "LSTM-8", [9, 8, 8, 8]))
    fewest = pd.DataFrame(rows("tf", "T1x8", [6, 7, 6], way="float tables",
                               route="progressive")
                          + rows("tf", "T1x8", [2, 2, 2], way="float tables", route="direct"))
    t = scorecard.transformer_bits_table(fewest, lossless).set_index("family")
    assert t.loc["FCDNN", "model"] == "1x32 (the most of 1x16, 1x32)"
    fc = lossless[lossless.family == "fc"]
    assert t.loc["FCDNN", "fewest lossless bits"] == claims.worst_model(fc)[1].cell(".2f")
    assert t.loc["FCDNN", "fewest lossless bits"].startswith("7.25")
    assert t.loc["CNN", "fewest lossless bits"] == "not measured"
    assert t.loc["Transformer classifier", "model"] == "T1x8"
    assert t.loc["Transformer classifier", "fewest lossless bits"].startswith("6.33")
