"""The quantization rows of the trade-off study: ptq_int8, ptq_w4, lsq_w4a4, lsq_w2a2, xnor, twn and kmeans_4bit."""

from minicompress import study


def test_ptq_rows_are_stored_packed_and_keep_the_accuracy():
    rows = study.run_study(["ptq_int8", "ptq_w4"], dataset="digits", model="lenet300", epochs=3, progress=False)
    assert [r["name"] for r in rows] == ["baseline", "ptq_int8", "ptq_w4"]
    base, int8, w4 = rows
    assert int8["size_format"] == w4["size_format"] == "packed"
    # 32-bit floats -> 8- and 4-bit codes; per-channel scales, biases and framing keep it
    # under the 4x and 8x limits on a model this small.
    assert base["size_bytes"] / int8["size_bytes"] > 3.2
    assert base["size_bytes"] / w4["size_bytes"] > 5.5
    assert int8["accuracy"] >= base["accuracy"] - 0.02
    assert w4["accuracy"] >= base["accuracy"] - 0.1


def test_lsq_rows_train_convert_and_store_packed_low_bit_weights():
    rows = study.run_study(
        ["lsq_w4a4", "lsq_w2a2"],
        dataset="digits",
        model="lenet300",
        epochs=3,
        progress=False,
    )
    assert [r["name"] for r in rows] == ["baseline", "lsq_w4a4", "lsq_w2a2"]
    base, w4, w2 = rows
    assert w4["size_format"] == w2["size_format"] == "packed"
    # 4-bit and 2-bit codes: far below the float file (about 8x and 16x on the weights,
    # less in all, as biases and the framing of each tensor stay)
    assert w2["size_bytes"] < w4["size_bytes"] < base["size_bytes"] / 3
    assert w4["accuracy"] > 0.5 and w2["accuracy"] > 0.3


def test_low_bit_rows_train_and_report_their_packed_size():
    rows = study.run_study(
        ["xnor", "twn", "kmeans_4bit"],
        dataset="digits",
        model="lenet300",
        epochs=3,
        progress=False,
    )
    assert [r["name"] for r in rows] == ["baseline", "xnor", "twn", "kmeans_4bit"]
    base = rows[0]
    weights, outputs = 64 * 300 + 300 * 100 + 100 * 10, 300 + 100 + 10
    for row, bits in zip(rows[1:], (1, 2, 4)):
        assert row["size_format"] == "packed"
        # b bits per weight, float32 biases, at most one float32 scale per output (XNOR's α),
        # and torch.save's framing (about 1.3 kB + 250 bytes per tensor record).
        payload = weights * bits / 8 + 4 * outputs
        assert payload < row["size_bytes"] < payload + 4 * outputs + 4_000
        assert row["size_bytes"] < base["size_bytes"] / 6
        assert row["accuracy"] > 0.5
        assert row["params"] == base["params"]
