"""PVSet's known triggers: stored with the vectors, read back exactly, malformed ones refused."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from lmsan.errors import PVSetError
from lmsan.pvset import PVSET_FORMAT, KnownTrigger, PVSet


def test_known_triggers_round_trip_and_sets_without_them_load(tmp_path):
    pvset = PVSet.empty(4).append(np.ones(4), seed=-1, trigger=KnownTrigger("cf", (1234,), 1.0))
    pvset = pvset.append(-np.ones(4), seed=7)  # a PV no text reproduces
    loaded = PVSet.load(pvset.save(tmp_path / "pvs.safetensors"))
    assert loaded.triggers == (KnownTrigger("cf", (1234,), 1.0), None)
    assert loaded.to_json()["triggers"] == [{"text": "cf", "token_ids": [1234], "hit_rate": 1.0}, None]
    bare = PVSet(np.ones((2, 4), np.float32))  # mined before the field
    assert PVSet.load(bare.save(tmp_path / "old.safetensors")).triggers == (None, None)


@pytest.mark.parametrize("entries, message", [
    ("[1, 2", "malformed triggers metadata"),
    ('{"text": "cf"}', "must be a non-empty list"),
    ("[]", "must be a non-empty list"),
    ("[" * 100000 + "]" * 100000, "malformed triggers metadata"),
    ('[{"text": "cf", "token_ids": [], "hit_rate": 1.0}]', "non-negative token ids"),
    ('[{"text": "cf", "token_ids": [-3], "hit_rate": 1.0}]', "non-negative token ids"),
    ('[{"text": "cf", "token_ids": [3.5], "hit_rate": 1.0}]', "non-negative token ids"),
    ('[{"text": "cf", "token_ids": [3], "hit_rate": 2}]', "hit rate must be in"),
    ('[{"text": "cf", "token_ids": [3]}]', "hit rate must be in"),
    ('["cf"]', "must be an object"),
    ("[null, null]", "one KnownTrigger or None per PV"),
])
def test_malformed_known_triggers_are_a_pvset_error_naming_the_file(tmp_path, entries, message):
    path = tmp_path / "pvs.safetensors"
    save_file({"vectors": np.ones((1, 4), np.float32)}, str(path),
              metadata={"format": PVSET_FORMAT, "target": "cls", "triggers": entries})
    with pytest.raises(PVSetError, match=message) as caught:
        PVSet.load(path)
    assert str(path) in str(caught.value)


def test_numpy_ids_and_rates_are_stored_as_plain_numbers():
    trigger = KnownTrigger("cf", (np.int64(12935),), np.float32(0.5))
    assert trigger.token_ids == (12935,) and type(trigger.token_ids[0]) is int and trigger.hit_rate == 0.5
    assert json.dumps(trigger.to_dict())


def test_a_trigger_list_must_fit_the_pvs():
    with pytest.raises(PVSetError, match="one KnownTrigger or None per PV"):
        PVSet(np.ones((2, 4), np.float32), triggers=(None,))
    assert json.loads(json.dumps(PVSet.empty(3).to_json()))["triggers"] == []
