"""The extreme-quantization rows of the trade-off study: xnor, twn and kmeans_4bit."""

from minicompress import study


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
