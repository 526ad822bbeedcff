"""Figure builders: what they draw follows the data, including the cases with little."""

import pandas as pd

from capq_lib.report import plots


def test_the_maximum_region_is_drawn_even_when_one_n_holds_it():
    curve = pd.DataFrame({"n_samples": [100, 200, 400, 800],
                          "mutual_info": [100, 198, 250, 120]})
    r = plots.regions(curve)
    assert r["maximum"][0] < 400 < r["maximum"][1]  # a region, not a point
    assert r["over-parameterized"] == (100.0, r["maximum"][0])
    assert r["under-parameterized"] == (r["maximum"][1], 800.0)
    assert all(hi > lo for lo, hi in r.values())


def test_a_family_not_quantized_gets_a_panel_that_says_so():
    main = pd.DataFrame({"family": ["fc"], "model": ["1x16"]})
    fig = plots.family_fractions(main, "cnn", "Fig. 4(b): CNN", "no CNN in this profile")
    assert "not measured under this profile: no CNN in this profile" in \
        fig.layout.annotations[0].text
