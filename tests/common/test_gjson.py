"""The platform's one GJSON path implementation (services/common/gjson.py): KServe's
InferenceGraph conditions and Katib's trial conditions are both read with it."""

from __future__ import annotations

import pytest

from services.common import gjson


def test_gjson_subset() -> None:
    doc = {"instances": [{"x": 1, "tag": "dog"}, {"x": 5}], "name": {"first": "Tom"}}
    found = {
        path: gjson.get(gjson.compile_path(path), doc)
        for path in (
            "instances.#",
            "instances.1.x",
            "instances.#.x",
            "instances.#(x>2)",
            "instances.#(x>0)#.x",
            "instances.#(tag%d*)",
            "instances.#(tag!%d*)",
            "name.fir?t",
            "[@this].#(name.first==Tom).name.first",
        )
    }
    assert found == {
        "instances.#": 2,
        "instances.1.x": 5,
        "instances.#.x": [1, 5],
        "instances.#(x>2)": {"x": 5},
        "instances.#(x>0)#.x": [1, 5],
        "instances.#(tag%d*)": {"x": 1, "tag": "dog"},
        "instances.#(tag!%d*)": gjson.MISSING,  # the element without a tag does not compare
        "name.fir?t": "Tom",
        "[@this].#(name.first==Tom).name.first": "Tom",
    }
    for bad in ("a|@reverse", "#(x==1", "a..b"):
        with pytest.raises(gjson.PathError):
            gjson.compile_path(bad)
