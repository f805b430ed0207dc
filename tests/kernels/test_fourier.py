"""The Fourier plan's transforms against NumPy's FFT, whole and in chunks of images."""

from __future__ import annotations

import numpy as np
import pytest

import digitnet.kernels.fourier as fourier_module
from digitnet.kernels.fourier import FourierPlan, complex_dtype
from digitnet.kernels.parallel import Workers


def _buffer():
    store: dict[str, np.ndarray] = {}

    def buffer(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if name not in store or store[name].shape != shape:
            store[name] = np.empty(shape, dtype)
        return store[name]

    return buffer


def _frequency_major(spectrum: np.ndarray) -> np.ndarray:
    """``[B, C, Lh, Kw]`` (NumPy's rfft2 layout) -> the plan's ``[Lh * Kw, B, C]``."""
    batch, channels = spectrum.shape[:2]
    return spectrum.transpose(2, 3, 0, 1).reshape(-1, batch, channels)


@pytest.mark.parametrize(("size", "kernel", "padding"), [(14, 3, 1), (14, 5, 2), (7, 3, 1), (9, 4, 0)])
def test_spectra_equal_numpy_rfft2_of_the_padded_images(size, kernel, padding, rng):
    plan = FourierPlan(size, size, (kernel, kernel), (padding, padding), np.float64)
    images = rng.standard_normal((3, 5, size, size))
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    # the input's spectrum is kept conjugated (X* = DFT with e^{+i theta}) at its padded position
    x_spec = plan.spectrum(images, plan.x_w, plan.x_h, _buffer(), "x")
    np.testing.assert_allclose(x_spec, _frequency_major(np.conj(np.fft.rfft2(padded))), atol=1e-9)
    # the output gradient's spectrum is the plain DFT of g zero-padded to Lh x Lw at the origin
    grads = rng.standard_normal((3, 4, plan.out_h, plan.out_w))
    frame = np.zeros((3, 4, plan.len_h, plan.len_w))
    frame[:, :, :plan.out_h, :plan.out_w] = grads
    g_spec = plan.spectrum(grads, plan.g_w, plan.g_h, _buffer(), "g")
    np.testing.assert_allclose(g_spec, _frequency_major(np.fft.rfft2(frame)), atol=1e-9)


def test_inverse_undoes_the_forward_transform(rng):
    plan = FourierPlan(14, 14, (3, 3), (1, 1), np.float64)
    grads = rng.standard_normal((2, 3, 14, 14))
    g_spec = plan.spectrum(grads, plan.g_w, plan.g_h, _buffer(), "g")
    back = np.empty_like(grads)
    # y_h/y_w invert the e^{-i theta} transform at the output positions: exactly what g_w/g_h computed
    plan.inverse(np.conj(g_spec), plan.y_h, plan.y_w, back, _buffer(), "inv")
    np.testing.assert_allclose(back, grads, atol=1e-9)


def test_image_chunks_cover_the_batch_in_near_equal_parts_within_the_budget(monkeypatch):
    plan = FourierPlan(14, 14, (3, 3), (1, 1), np.float32)
    monkeypatch.setattr(fourier_module, "CHUNK_BYTES", 1000)
    chunks = plan.image_chunks(10, 300)                        # 3 images per chunk at most -> 4 chunks
    assert [(c.start, c.stop) for c in chunks] == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert plan.image_chunks(5, 5000) == [slice(i, i + 1) for i in range(5)]    # an image over the budget
    monkeypatch.setattr(fourier_module, "CHUNK_BYTES", 1 << 20)
    assert plan.image_chunks(128, 14 * 9 * 64 * 8) == [slice(16 * i, 16 * (i + 1)) for i in range(8)]


@pytest.mark.parametrize("chunk_bytes", [1, 7 * 9 * 5 * 16, 1 << 20])
def test_transforms_in_ragged_chunks_equal_the_fft_and_give_the_same_bits_on_any_threads(chunk_bytes, rng,
                                                                                          monkeypatch):
    monkeypatch.setattr(fourier_module, "CHUNK_BYTES", chunk_bytes)   # 11 chunks of 1, 4 ragged ones, 1
    plan = FourierPlan(7, 7, (3, 3), (1, 1), np.float32)
    images = rng.standard_normal((11, 5, 7, 7)).astype(np.float32)
    results = []
    for threads in (1, 3):
        workers = Workers(threads)
        try:
            spectrum = plan.spectrum(images, plan.x_w, plan.x_h, _buffer(), "x", workers).copy()
            plain = plan.spectrum(images, plan.g_w, plan.g_h, _buffer(), "g", workers)   # as an output gradient
            back = plan.inverse(np.conj(plain), plan.y_h, plan.y_w, np.empty_like(images), _buffer(), "inv",
                                workers)
        finally:
            workers.close()
        results.append((spectrum, back))
    # the chunks depend on the shapes only, so the threads that run them change no bit
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    padded = np.pad(images.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    np.testing.assert_allclose(results[0][0], _frequency_major(np.conj(np.fft.rfft2(padded))), atol=2e-4)
    # y_h/y_w invert the e^{-i theta} transform at the output positions (7x7 here, as the input)
    np.testing.assert_allclose(results[0][1], images, atol=2e-5)


@pytest.mark.parametrize(("size", "kernel", "padding"),
                         [(14, (3, 3), (1, 1)), (9, (5, 3), (2, 1)), (7, (4, 4), (0, 0))])
def test_kernel_spectrum_is_the_dft_of_the_zero_padded_kernel_and_inverts(size, kernel, padding, rng):
    plan = FourierPlan(size, size, kernel, padding, np.float64)
    weights = rng.standard_normal((4, 3, *kernel))                  # [C_out, C_in, kH, kW]
    spectrum = plan.kernel_spectrum(weights)                        # [F, C_in, C_out]
    frame = np.zeros((4, 3, plan.len_h, plan.len_w))
    frame[:, :, :kernel[0], :kernel[1]] = weights
    expected = np.fft.rfft2(frame).transpose(2, 3, 1, 0).reshape(-1, 3, 4)
    np.testing.assert_allclose(spectrum, expected, atol=1e-9)
    np.testing.assert_allclose(plan.kernel_from_spectrum(spectrum), weights, atol=1e-9)
    np.testing.assert_allclose(plan.kernel_from_spectrum(np.conj(spectrum), conjugated=True), weights, atol=1e-9)


def test_plan_geometry_and_dtypes():
    plan = FourierPlan(14, 12, (5, 3), (2, 1), np.float32)
    assert (plan.len_h, plan.len_w) == (18, 14)
    assert (plan.out_h, plan.out_w) == (14, 12)                      # "same" padding
    assert (plan.freq_h, plan.freq_w) == (18, 8)                     # Lh and Lw // 2 + 1
    assert plan.real == np.float32 and plan.complex == np.complex64
    assert complex_dtype(np.float64) == np.complex128 and complex_dtype(np.float32) == np.complex64


@pytest.mark.parametrize(("length", "itemsize", "expected"),
                         [(1024, 8, 1032), (512, 8, 520), (960, 8, 968), (1032, 8, 1032), (3, 8, 8), (4096, 16, 4100),
                          (100, 4, 112)])
def test_unaliased_length_is_the_next_odd_number_of_cache_lines(length, itemsize, expected):
    padded = fourier_module.unaliased_length(length, itemsize)
    assert padded == expected
    assert padded >= length and (padded * itemsize) % 64 == 0 and (padded * itemsize // 64) % 2 == 1


def test_spectra_are_views_whose_frequencies_lie_an_odd_number_of_cache_lines_apart(rng):
    # 16 images x 64 channels: a 1024-value row per frequency would put every row 8 KB apart
    plan = FourierPlan(6, 6, (3, 3), (1, 1), np.float32)
    images = rng.standard_normal((16, 64, 6, 6)).astype(np.float32)
    spectrum = plan.spectrum(images, plan.x_w, plan.x_h, _buffer(), "x")
    assert spectrum.shape == (8 * 5, 16, 64)                     # Lh = 8, Kw = 8 // 2 + 1
    assert spectrum.strides[0] == 1032 * 8 and spectrum.strides[1:] == (64 * 8, 8)
    padded = np.pad(images.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    np.testing.assert_allclose(spectrum, _frequency_major(np.conj(np.fft.rfft2(padded))), atol=2e-4)
    # the inverse's chunk rows are padded as well; its result is the same as from a contiguous spectrum
    back = plan.inverse(np.conj(spectrum), plan.y_h, plan.y_w, np.empty_like(images), _buffer(), "inv")
    again = plan.inverse(np.ascontiguousarray(np.conj(spectrum)), plan.y_h, plan.y_w, np.empty_like(images),
                         _buffer(), "inv")
    np.testing.assert_array_equal(back, again)
    with pytest.raises(ValueError, match="rows of B"):
        plan._by_column(np.empty((40, 3, 4), plan.complex).transpose(0, 2, 1))     # B, C not one row
