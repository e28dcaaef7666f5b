"""keras_vae.core.hierarchy: the latent-group metadata, the noise and its temperatures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_vae.core import contract, hierarchy

GROUPS = (hierarchy.LatentGroup("group_0", (3,)), hierarchy.LatentGroup("group_1", (2, 2, 1)))
D = 7



def test_groups_round_trip_and_slices():
    value = hierarchy.encode_groups(GROUPS)
    assert json.loads(value) == [{"name": "group_0", "shape": [3]}, {"name": "group_1", "shape": [2, 2, 1]}]
    assert hierarchy.decode_groups(value, D) == GROUPS
    assert hierarchy.group_slices(GROUPS) == [slice(0, 3), slice(3, 7)]
    assert hierarchy.describe_groups(GROUPS)[1] == {"name": "group_1", "shape": [2, 2, 1], "size": 4,
                                                    "start": 3, "stop": 7}


@pytest.mark.parametrize("value, message", [
    (None, "missing"),
    ("not json", "not JSON"),
    ("[]", "non-empty JSON list"),
    ('{"name": "a"}', "non-empty JSON list"),
    ('[{"name": "a", "shape": [3]}, {"name": "b", "shape": [3]}]', "sum to 6, not to latent_dim = 7"),
    ('[{"name": "a", "shape": [0, 7]}]', "positive integers"),
    ('[{"name": "a", "shape": [-7]}]', "positive integers"),
    ('[{"name": "a", "shape": [7, 1]}]', "[d] or [h, w, c]"),
    ('[{"name": "a", "shape": [true]}]', "positive integers"),
    ('[{"shape": [7]}]', "non-empty string"),
    ('[{"name": "a", "shape": [3]}, {"name": "a", "shape": [4]}]', "distinct"),
])
def test_malformed_groups_are_refused(value, message):
    with pytest.raises(ValueError, match="malformed latent_groups metadata") as info:
        hierarchy.decode_groups(value, D)
    assert message in str(info.value)


def test_is_hierarchical():
    assert not hierarchy.is_hierarchical({})
    assert hierarchy.is_hierarchical({contract.MODEL: "hierarchical"})
    with pytest.raises(ValueError, match="unknown model 'ladder'"):
        hierarchy.is_hierarchical({contract.MODEL: "ladder"})


def test_draw_noise_matches_draw_latents_and_scales_each_group():
    plain = hierarchy.draw_noise(5, GROUPS, seed=4, temperature=0.7)
    assert plain.tobytes() == contract.draw_latents(5, D, None, 4, 0.7).tobytes()
    assert hierarchy.draw_noise(5, GROUPS, 4, 0.7, [1, 1]).tobytes() == plain.tobytes()
    scaled = hierarchy.draw_noise(5, GROUPS, 4, 1.0, [0.0, 2.0])
    base = contract.draw_latents(5, D, None, 4, 1.0)
    assert not scaled[:, :3].any()
    np.testing.assert_array_equal(scaled[:, 3:], base[:, 3:] * np.float32(2))
    with pytest.raises(ValueError, match="one per latent group"):
        hierarchy.draw_noise(2, GROUPS, 0, 1.0, [1.0])
    with pytest.raises(ValueError, match="temperature must be"):
        hierarchy.draw_noise(2, GROUPS, 0, 1.0, [1.0, -1.0])
