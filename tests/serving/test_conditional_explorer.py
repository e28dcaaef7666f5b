"""The explorer's class picker for a class-conditional decoder, in headless Chromium: the page's
onnxruntime-web decodes with the picked label like onnxruntime in Python, and the picker
redraws the sample grid, the latent pad and the interpolation strips; without onnxruntime-web
the page decodes through the server with the same label."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.headless_chromium import explorer_app, open_page
from helpers.headless_chromium import serve_app
from test_conditional_serving import CLASSES, make_conditional_decoder, make_conditional_encoder
from test_conditional_serving import reference_decode

from keras_vae.serving import explorer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conditional_explorer")
    return (make_conditional_decoder(folder / "decoder.onnx"),
            make_conditional_encoder(folder / "encoder.onnx"))


def make_app(decoder, encoder):
    return explorer_app(decoder, encoder)


def grid_images(page):
    """The sample grid's z (as the page drew it) decoded by the page, with the current label."""
    z = page.evaluate("Array.from(explorer.drawLatents(16, 0, 1.0))")
    result = page.evaluate("(z) => explorer.decode(z)", np.asarray(z).reshape(16, -1).tolist())
    return np.asarray(z, np.float32).reshape(16, -1), np.asarray(result["data"]).reshape(result["dims"])


def test_the_class_picker_drives_every_image(page, models):
    with serve_app(make_app(*models)) as url:
        open_page(page, url + "/?class=three")
        assert page.evaluate("explorer.backend") == "onnxruntime-web"
        assert page.is_visible("#class-picker")
        options = page.eval_on_selector_all("#class-picker option", "els => els.map(e => e.textContent)")
        assert options == [f"{k}: {name}" for k, name in enumerate(CLASSES)]
        assert page.evaluate("explorer.label") == 3
        z, images = grid_images(page)
        np.testing.assert_allclose(images, reference_decode(z, np.full(16, 3)), atol=1e-5)

        pad_z = page.evaluate("explorer.getZ()")
        interpolation_before = page.evaluate("Array.from(explorer.interpolation.images)")
        page.select_option("#class-picker", "1")  # the picker, as a person uses it
        page.wait_for_function("explorer.label === 1")
        page.evaluate("explorer.settled()")
        page.wait_for_function("(before) => explorer.interpolation.images[0] !== before",
                               arg=interpolation_before[0])
        pad_image = np.asarray(page.evaluate("Array.from(explorer.current.image)"))
        np.testing.assert_allclose(pad_image.reshape(1, 4, 4, 1),
                                   reference_decode([pad_z], [1]), atol=1e-5)
        strips = np.asarray(page.evaluate("Array.from(explorer.interpolation.images)"))
        a, b = (np.asarray(page.evaluate(f"Array.from(explorer.interpolation.{k})")) for k in ("a", "b"))
        np.testing.assert_allclose(strips[:16], reference_decode([a], [1]).ravel(), atol=1e-5)
        assert not np.allclose(strips, interpolation_before, atol=1e-4)
        z, images = grid_images(page)
        np.testing.assert_allclose(images, reference_decode(z, np.full(16, 1)), atol=1e-5)

        page.evaluate("explorer.setLabel(4)")
        assert page.input_value("#class-picker") == "4"
        with pytest.raises(Exception, match=r"0\.\.4"):
            page.evaluate("explorer.setLabel(5)")
        assert page.rec.console_errors == [] and page.rec.external_requests() == []


def test_without_onnxruntime_web_the_server_decodes_with_the_label(page, models, monkeypatch):
    monkeypatch.setenv(explorer.ORT_WEB_DIR_ENV, "/nonexistent/onnxruntime-web/dist")
    with serve_app(make_app(*models)) as url:
        open_page(page, url + "/?class=two")
        assert page.evaluate("explorer.backend") == "server"
        z, images = grid_images(page)
        np.testing.assert_allclose(images, reference_decode(z, np.full(16, 2)), atol=1e-5)
        x = np.random.default_rng(3).random((2, 4, 4, 1)).astype(np.float32)
        encoded = page.evaluate("x => explorer.encode(x)", x.tolist())
        from test_conditional_serving import reference_encode

        np.testing.assert_allclose(encoded["z_mean"], reference_encode(x, [2, 2])[0], atol=1e-4)
