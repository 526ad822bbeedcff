"""Every read of the results cache goes through here: the records of one kind and one
profile configuration, their rows, and the newest capacity summary per model.

A record belongs to a profile by its label (``NAME@DIGEST``, see report/profiles.py); one
filter, here, decides which records a page, a command or the advisor may use.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from capq_lib.experiments.results import ResultsCache


def profile_matches(label: str | None, wanted: str | None) -> bool:
    """Whether a record labelled ``label`` belongs to profile ``wanted``: None takes every
    record; an identity ``NAME@DIGEST`` exactly that configuration; a bare name every
    configuration of that name (the command line's ``--profile quick``)."""
    if wanted is None:
        return True
    if label is None:
        return False
    return label == wanted or ("@" not in wanted and label.split("@", 1)[0] == wanted)


def of_profile(kind: str, profile: str | None,
               cache: ResultsCache | None = None) -> list[dict[str, Any]]:
    """The complete records of ``kind`` under ``profile``, oldest first: those it made and
    those it reused from another profile (the cache notes each reuse), the latter labelled
    with ``profile``'s own identity, so a profile's chapters always find each other's."""
    cache = cache or ResultsCache()
    used = cache.uses(kind)
    out = []
    for record in cache.records(kind):
        own = record["result"].get("profile")
        if profile is None:
            out.append(record)
            continue
        for label in [own, *sorted(used.get(record["key"], set()) - {own})]:
            if profile_matches(label, profile):
                out.append(record if label == own else
                           {**record, "result": {**record["result"], "profile": label}})
    return out


def rows(kind: str, profile: str | None, cache: ResultsCache | None = None,
         provenance: bool = False) -> list[dict[str, Any]]:
    """Every row of those records (a record holds one result, or many under ``rows``),
    labelled with its profile (and, on request, the record's provenance)."""
    out = []
    for record in of_profile(kind, profile, cache):
        res = record["result"]
        for r in res.get("rows", [res]):
            row = {**r, "profile": res.get("profile")}
            if provenance:
                row["provenance"] = record["provenance"]
            out.append(row)
    return out


def summaries(kind: str, profile: str | None = None,
              cache: ResultsCache | None = None) -> pd.DataFrame:
    """The newest capacity summary per model of experiment ``kind`` under ``profile``."""
    df = pd.DataFrame([r["result"] for r in of_profile(kind, profile, cache)])
    return df.drop_duplicates("model", keep="last").reset_index(drop=True) if len(df) else df


def labels(kind: str, cache: ResultsCache | None = None) -> set[str]:
    """The profile labels that records of ``kind`` carry, or that reuse them."""
    cache = cache or ResultsCache()
    used = {x for labels in cache.uses(kind).values() for x in labels}
    return {str(r["result"].get("profile")) for r in cache.records(kind)} | used


def other_configurations(identity: str, cache: ResultsCache | None = None) -> list[str]:
    """Profile labels of records that share ``identity``'s name but not its digest."""
    cache = cache or ResultsCache()
    name = identity.split("@", 1)[0]
    found = {x for kind in cache.kinds() for x in labels(kind, cache)}
    return sorted(x for x in found if x != identity and x.split("@", 1)[0] == name)
