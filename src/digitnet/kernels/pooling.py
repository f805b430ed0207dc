"""The fast twins of MaxPool2D and AvgPool2D: strided views, tournaments, and a chunked 2x2 path.

Both poolings work on strided views, one per kernel offset, so every step is one NumPy operation
on the whole batch (no loop over samples or windows)::

    x[:, :, i : i + sH*(H_out-1) + 1 : sH, ...]      row i of every window, [B, C, H_out, ...]

Average pooling sums the ``kH*kW`` offset views ``x_ij`` (``x_ij[b, c, h, w] = x[b, c, h*sH + i,
w*sW + j]``). Max pooling is separable, ``max over (i, j) = max over i of (max over j)``: first
along W (giving ``[B, C, H, W_out]``), then along H. This beats taking all four offsets at once,
and by far NumPy's reductions over short strided axes (``x.reshape(B, C, H/2, 2, W/2, 2).max(axis=(3,
5))``). When ``s == k`` and H, W divide by k (every input in exactly one window) backward assigns
into ``dx``; otherwise it zero-fills it and adds (overlapping windows).
Training with 2x2 windows side by side, the usual case, takes a fast path: the same two matches
written out, run over the batch in chunks that fit the L2 cache (see ``CHUNK_BYTES``), the chunks
spread over the workers' threads (each chunk writes only its own images). A convolution that trains
with its pooling can hand its output over **parity-major**, ``[B, C, 2, 2, H/2, W/2]`` with
``x[b, c, ph, pw, h2, w2] = x[b, c, 2*h2 + ph, 2*w2 + pw]``: the two sides of every match then lie in
two contiguous planes, and the same four passes run on contiguous arrays instead of every other float.
"""

from __future__ import annotations

import math

import numpy as np

from digitnet.kernels.buffers import Buffered
from digitnet.kernels.registry import kernel_for
from digitnet.nn.pooling import AvgPool2D, MaxPool2D

#: Training with 2x2 windows side by side (the usual case) goes through the batch in chunks of
#: images whose input takes about this many bytes: the four passes over a chunk then find it in the
#: L2 cache instead of main memory.
CHUNK_BYTES = 1 << 19
#: MaxPool2D._matches after a fast-path forward (the general path keeps the tournament's matches)
_HALVES = "halves"
#: MaxPool2D._matches after a fast-path forward of a parity-major input (its right_won is parity-major too)
_PARITY = "parity"


class FastPool(Buffered):
    """Shared window bookkeeping of the two pooling kernels."""

    def setup(self) -> None:
        self._input_shape: tuple[int, ...] | None = None
        self._dtype = np.dtype(np.float32)
        self._matches: list | str | None = None

    def _offset_views(self, array: np.ndarray, out_h: int, out_w: int) -> list[np.ndarray]:
        """``[x_ij for (i, j) in row-major order]``: strided views, element (i, j) of every window."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return [array[:, :, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
                for i in range(kh) for j in range(kw)]

    @staticmethod
    def _axis_views(array: np.ndarray, axis: int, kernel: int, stride: int, count: int) -> list[np.ndarray]:
        """Offsets ``t = 0 .. kernel-1`` along one axis: ``array[..., t : t + stride*(count-1) + 1 : stride, ...]``."""
        index: list[slice] = [slice(None)] * array.ndim
        views = []
        for t in range(kernel):
            index[axis] = slice(t, t + stride * (count - 1) + 1, stride)
            views.append(array[tuple(index)])
        return views

    def _grad_target(self, name: str, shape: tuple[int, ...], axis: int) -> tuple[np.ndarray, bool]:
        """A gradient buffer for the input of one pooling axis, and whether to add (+=) into it.

        Zero-filled unless the windows along ``axis`` tile it exactly (then every entry is assigned).
        """
        kernel, stride = self.kernel_size[axis - 2], self.stride[axis - 2]
        target = self.work_buffer(name, shape, self._dtype)
        if stride == kernel and shape[axis] % kernel == 0:
            return target, False
        target.fill(0)                    # uncovered rows/columns get 0; overlapping windows add up
        return target, stride < kernel

    def _grad_buffer(self) -> tuple[np.ndarray, bool]:
        """``dL/dx`` buffer for the 2-D offset views and whether to add (+=) into it rather than assign."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        grad_in = self.work_buffer("grad_in", self._input_shape, self._dtype)
        height, width = self._input_shape[2:]
        if (sh, sw) == (kh, kw) and height % kh == 0 and width % kw == 0:
            return grad_in, False
        grad_in.fill(0)                   # uncovered rows/columns get 0; overlapping windows add up
        return grad_in, (sh < kh or sw < kw)



@kernel_for(MaxPool2D)
class FastMaxPool2D(FastPool, MaxPool2D):
    """:class:`~digitnet.nn.pooling.MaxPool2D` as a knockout tournament over offset views.

    Separable: along W, then along H. Along one axis the maximum of the ``k`` offset views is a
    knockout tournament (for k = 2 one match, ``max(x_0, x_1)``) that remembers, per match, which
    side won as a boolean array. Backward replays the matches the other way:
    ``g_right = g * won``, ``g_left = g * (not won)``, first for H, then for W. A right side wins
    only when strictly greater, which gives the reference's tie rule (the first maximum wins).
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        out_h, out_w = self.check_input(x)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        batch, channels, height, _ = x.shape
        self._matches = None
        if training and self.takes_fast_path(x.shape):
            return self._forward_halves(x)
        y = self.output_buffer("y", (batch, channels, out_h, out_w), x.dtype, training)
        # along W: [B, C, H, W_out] (a plain view when kW = 1), then along H into y
        if kw == 1:
            rows_max = x[:, :, :, ::sw][:, :, :, :out_w]
            matches_w: list = []
        else:
            rows_max = self.work_buffer("rows_max", (batch, channels, height, out_w), x.dtype) \
                if training else np.empty((batch, channels, height, out_w), dtype=x.dtype)
            matches_w = self._tournament(self._axis_views(x, 3, kw, sw, out_w), rows_max, "w", training)
        matches_h = self._tournament(self._axis_views(rows_max, 2, kh, sh, out_h), y, "h", training)
        if training:
            self._matches = (matches_h, matches_w)
            self._input_shape, self._dtype = x.shape, x.dtype
        return y

    # -- the fast path: 2x2 windows side by side, even H and W ------------------------------------
    def takes_fast_path(self, shape: tuple[int, ...]) -> bool:
        """Whether training on inputs of ``shape`` takes the 2x2 fast path: kernel = stride = 2, every
        input in exactly one window."""
        return self.kernel_size == self.stride == (2, 2) and shape[2] % 2 == 0 and shape[3] % 2 == 0

    @staticmethod
    def images_per_chunk(shape: tuple[int, ...], dtype: np.dtype) -> int:
        """How many input images of ``shape`` make about CHUNK_BYTES (at least one)."""
        return max(1, CHUNK_BYTES // max(1, np.dtype(dtype).itemsize * math.prod(shape[1:])))

    def fast_path_chunks(self, shape: tuple[int, ...], dtype: np.dtype) -> list[slice]:
        """Slices of the batch of :meth:`images_per_chunk` images each (the last may be shorter)."""
        per_chunk = self.images_per_chunk(shape, dtype)
        return [slice(start, start + per_chunk) for start in range(0, shape[0], per_chunk)]

    def start_fast_forward(self, shape: tuple[int, ...], dtype: np.dtype, parity_major: bool = False) -> np.ndarray:
        """Prepare a fast-path training forward of an input of ``shape``; returns the output ``y``.

        :meth:`fast_forward_chunk` (or, with ``parity_major``, :meth:`fast_forward_parity_chunk`) then
        fills ``y`` chunk by chunk (see :meth:`fast_path_chunks`). Row maxima are needed only while
        their chunk is processed: one chunk-sized buffer per thread (:meth:`rows_buffer`), which stays
        in cache, instead of a batch-sized one written back to memory.
        """
        batch, channels, height, width = shape
        self.work_buffer("right_won", (batch, channels, height, width // 2), np.dtype(np.bool_))
        self.work_buffer("lower_won", (batch, channels, height // 2, width // 2), np.dtype(np.bool_))
        self._matches = _PARITY if parity_major else _HALVES
        self._input_shape, self._dtype = tuple(shape), np.dtype(dtype)
        return self.work_buffer("y", (batch, channels, height // 2, width // 2), dtype)

    def fast_forward_chunk(self, x_part: np.ndarray, part: slice, y: np.ndarray) -> None:
        """The tournament of the general case written out for 2x2 windows, on the images ``part``.

        ``right_won = x[..., 1::2] > x[..., 0::2]`` and ``rows = max`` of the two columns of each
        window, then ``lower_won = rows[:, :, 1::2] > rows[:, :, 0::2]`` and ``y = max`` of the rows.
        """
        rows = self.rows_buffer("rows_max", len(x_part))
        _play((x_part[..., 0::2], x_part[..., 1::2]), rows, (rows[:, :, 0::2], rows[:, :, 1::2]),
              self._work["right_won"][part], self._work["lower_won"][part], y[part])

    def fast_backward_chunk(self, grad_out: np.ndarray, part: slice, into: np.ndarray) -> None:
        """Replay of :meth:`fast_forward_chunk` for the images ``part``, writing their ``dL/dx`` to ``into``.

        The winner of each match gets ``g * won``, the loser ``g - g * won`` (one pass instead of a
        ``logical_not`` and a second product).
        """
        g = grad_out[part]
        rows = self.rows_buffer("grad_rows", len(g))
        _replay(g, rows, (rows[:, :, 0::2], rows[:, :, 1::2]), (into[..., 0::2], into[..., 1::2]),
                self._work["right_won"][part], self._work["lower_won"][part])

    def fast_forward_parity_chunk(self, x_part: np.ndarray, part: slice, y: np.ndarray) -> None:
        """:meth:`fast_forward_chunk` for a parity-major chunk ``x_part [b, C, 2, 2, H/2, W/2]``.

        The same matches with the same tie rule, so the same ``y``; the sides of each match are the
        planes ``pw = 0, 1`` (then ``ph = 0, 1``), so every pass runs over contiguous arrays.
        ``right_won`` is kept parity-major, ``[B, C, 2, H/2, W/2]``.
        """
        rows = self._parity_rows("rows_max", len(x_part))
        _play((x_part[:, :, :, 0], x_part[:, :, :, 1]), rows, (rows[:, :, 0], rows[:, :, 1]),
              self._parity_right_won()[part], self._work["lower_won"][part], y[part])

    def fast_backward_parity_chunk(self, grad_out: np.ndarray, part: slice, into: np.ndarray) -> None:
        """:meth:`fast_backward_chunk` after :meth:`fast_forward_parity_chunk`: ``dL/dx`` of the images
        ``part`` into the parity-major ``into [b, C, 2, 2, H/2, W/2]``."""
        g = grad_out[part]
        rows = self._parity_rows("grad_rows", len(g))
        _replay(g, rows, (rows[:, :, 0], rows[:, :, 1]), (into[:, :, :, 0], into[:, :, :, 1]),
                self._parity_right_won()[part], self._work["lower_won"][part])

    def _parity_right_won(self) -> np.ndarray:
        batch, channels, height, width = self._input_shape
        return self._work["right_won"].reshape(batch, channels, 2, height // 2, width // 2)

    def _parity_rows(self, name: str, count: int) -> np.ndarray:
        """:meth:`rows_buffer` seen parity-major: ``[count, C, 2, H/2, W/2]``."""
        _, channels, height, width = self._input_shape
        return self.rows_buffer(name, count).reshape(count, channels, 2, height // 2, width // 2)

    def _backward_parity(self, grad_out: np.ndarray) -> np.ndarray:
        """The pooling's own backward after a parity-major forward: ``dL/dx`` in NCHW."""
        batch, channels, height, width = self._input_shape
        grad_in = self.work_buffer("grad_in", self._input_shape, self._dtype)
        parity = self.work_buffer("grad_parity", (batch, channels, 2, 2, height // 2, width // 2), self._dtype)

        def chunk(part: slice) -> None:
            self.fast_backward_parity_chunk(grad_out, part, parity[part])
            # grad_in[b, c, 2 h2 + ph, 2 w2 + pw] = parity[b, c, ph, pw, h2, w2]
            np.copyto(grad_in[part].reshape(-1, channels, height // 2, 2, width // 2, 2),
                      parity[part].transpose(0, 1, 4, 2, 5, 3))

        self.workers.run(chunk, self.fast_path_chunks(self._input_shape, self._dtype))
        return grad_in

    def rows_buffer(self, name: str, count: int) -> np.ndarray:
        """The calling thread's chunk-sized buffer of row maxima (or their gradient), ``[count, C, H, W/2]``
        (a view of one of at least :meth:`images_per_chunk` images: chunks cut by the layer before
        may be larger)."""
        batch, channels, height, width = self._input_shape
        n = max(count, self.images_per_chunk(self._input_shape, self._dtype))
        return self.lane_chunk(name, n, (channels, height, width // 2), self._dtype)[:count]

    def _forward_halves(self, x: np.ndarray) -> np.ndarray:
        y = self.start_fast_forward(x.shape, x.dtype)
        self.workers.run(lambda part: self.fast_forward_chunk(x[part], part, y),
                         self.fast_path_chunks(x.shape, x.dtype))
        return y

    def _backward_halves(self, grad_out: np.ndarray) -> np.ndarray:
        grad_in = self.work_buffer("grad_in", self._input_shape, self._dtype)
        self.workers.run(lambda part: self.fast_backward_chunk(grad_out, part, grad_in[part]),
                         self.fast_path_chunks(self._input_shape, self._dtype))
        return grad_in

    def _tournament(self, players: list[np.ndarray], out: np.ndarray, tag: str,
                    training: bool) -> list[list[np.ndarray | None]]:
        """Write the element-wise maximum of ``players`` into ``out``; return the matches.

        ``rounds[r][n]`` is the boolean "right side won" array of match ``n`` of round ``r``, or
        None for a player without an opponent in that round (odd count).
        """
        if not training:
            np.copyto(out, players[0])
            for player in players[1:]:
                np.maximum(out, player, out=out)
            return []
        rounds = []
        while len(players) > 1:
            matches, winners = [], []
            for m in range(0, len(players) - 1, 2):
                left, right = players[m], players[m + 1]
                best = out if len(players) == 2 else self.work_buffer(f"max_{tag}{len(rounds)}_{m}",
                                                                      out.shape, out.dtype)
                right_won = self.work_buffer(f"won_{tag}{len(rounds)}_{m}", out.shape, np.bool_)
                np.greater(right, left, out=right_won)          # strict: ties go to the left (earlier)
                np.maximum(left, right, out=best)
                matches.append(right_won)
                winners.append(best)
            if len(players) % 2:
                matches.append(None)
                winners.append(players[-1])
            rounds.append(matches)
            players = winners
        if not rounds:                                          # a single player: kernel 1 on this axis
            np.copyto(out, players[0])
        return rounds

    def _replay(self, rounds: list[list[np.ndarray | None]], grad: np.ndarray, targets: list[np.ndarray],
                accumulate: bool, tag: str) -> None:
        """Route ``grad`` back through the tournament into the players' gradient views ``targets``."""
        lost = self.work_buffer("lost_" + tag, grad.shape, np.bool_)
        routed = self.work_buffer("routed_" + tag, grad.shape, grad.dtype) if accumulate else None

        def deliver(value: np.ndarray, target: np.ndarray, mask: np.ndarray | None) -> None:
            if mask is None:
                if accumulate:
                    target += value
                else:
                    np.copyto(target, value)
            elif accumulate:
                np.multiply(value, mask, out=routed)
                target += routed
            else:
                np.multiply(value, mask, out=target)

        if not rounds:
            deliver(grad, targets[0], None)
            return
        grads = [grad]
        for r in range(len(rounds) - 1, -1, -1):                # the final first
            children: list[np.ndarray] = []
            for n, right_won in enumerate(rounds[r]):
                if right_won is None:                           # had no opponent: passes through
                    if r == 0:
                        deliver(grads[n], targets[len(children)], None)
                    children.append(grads[n])
                    continue
                if r == 0:
                    sides = targets[len(children):len(children) + 2]
                else:
                    sides = [self.work_buffer(f"grad_{tag}{r}_{n}_{side}", grad.shape, grad.dtype)
                             for side in (0, 1)]
                np.logical_not(right_won, out=lost)
                if r == 0:
                    deliver(grads[n], sides[0], lost)
                    deliver(grads[n], sides[1], right_won)
                else:
                    np.multiply(grads[n], lost, out=sides[0])
                    np.multiply(grads[n], right_won, out=sides[1])
                children.extend(sides)
            grads = children

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if not self.compute_input_grad:
            return None
        if self._matches is None:
            raise RuntimeError("MaxPool2D.backward needs a forward(x, training=True) first")
        if self._matches is _HALVES:
            return self._backward_halves(grad_out)
        if self._matches is _PARITY:
            return self._backward_parity(grad_out)
        matches_h, matches_w = self._matches
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        batch, channels, height, width = self._input_shape
        out_h, out_w = grad_out.shape[2:]
        if kw == 1:     # rows_max was a strided view of x: its gradient is that view of dx
            grad_in = self.work_buffer("grad_in", self._input_shape, self._dtype)
            if not (sw == 1 and sh == kh and height % kh == 0):
                grad_in.fill(0)
            grad_rows, add_h = grad_in[:, :, :, ::sw][:, :, :, :out_w], sh < kh
        else:
            grad_in, add_w = self._grad_target("grad_in", self._input_shape, 3)
            grad_rows, add_h = self._grad_target("grad_rows", (batch, channels, height, out_w), 2)
        self._replay(matches_h, grad_out, self._axis_views(grad_rows, 2, kh, sh, out_h), add_h, "h")
        if kw > 1:
            self._replay(matches_w, grad_rows, self._axis_views(grad_in, 3, kw, sw, out_w), add_w, "w")
        return grad_in




def _play(columns: tuple[np.ndarray, np.ndarray], rows: np.ndarray, row_sides: tuple[np.ndarray, np.ndarray],
          right_won: np.ndarray, lower_won: np.ndarray, y: np.ndarray) -> None:
    """The two matches of 2x2 windows, whatever the layout: ``columns`` are the left and right sides of
    every window, ``row_sides`` the upper and lower halves of ``rows`` (views of it, written here)."""
    left, right = columns
    upper, lower = row_sides
    np.greater(right, left, out=right_won)           # ties: the left
    np.maximum(left, right, out=rows)
    np.greater(lower, upper, out=lower_won)          # ties: the upper
    np.maximum(upper, lower, out=y)


def _replay(g: np.ndarray, rows: np.ndarray, row_sides: tuple[np.ndarray, np.ndarray],
            columns: tuple[np.ndarray, np.ndarray], right_won: np.ndarray, lower_won: np.ndarray) -> None:
    """:func:`_play` backwards: the winner of each match gets ``g * won``, the loser ``g - g * won`` (one
    pass instead of a ``logical_not`` and a second product); ``columns`` are views of ``dL/dx``."""
    upper, lower = row_sides
    left, right = columns
    np.multiply(g, lower_won, out=lower)
    np.subtract(g, lower, out=upper)
    np.multiply(rows, right_won, out=right)
    np.subtract(rows, right, out=left)

@kernel_for(AvgPool2D)
class FastAvgPool2D(FastPool, AvgPool2D):
    """:class:`~digitnet.nn.pooling.AvgPool2D` as a sum of offset views, in reused buffers."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        out_h, out_w = self.check_input(x)
        views = self._offset_views(x, out_h, out_w)
        y = self.output_buffer("y", (*x.shape[:2], out_h, out_w), x.dtype, training)
        np.copyto(y, views[0])
        for view in views[1:]:
            y += view
        y *= x.dtype.type(1.0 / len(views))
        self._input_shape, self._dtype = x.shape, x.dtype
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if not self.compute_input_grad:
            return None
        grad_in, accumulate = self._grad_buffer()
        out_h, out_w = grad_out.shape[2:]
        share = grad_out                  # backward may overwrite grad_out: scale it in place
        share *= grad_out.dtype.type(1.0 / (self.kernel_size[0] * self.kernel_size[1]))
        for grad_view in self._offset_views(grad_in, out_h, out_w):
            if accumulate:
                grad_view += share
            else:
                np.copyto(grad_view, share)
        return grad_in
