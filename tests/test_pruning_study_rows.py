"""The pruning rows of the trade-off study: magnitude_90 and gradual_90."""

from minicompress import measure, study


def test_pruning_rows_reach_ninety_percent_and_report_their_csr_size():
    rows = study.run_study(
        ["magnitude_90", "gradual_90"],
        dataset="digits",
        model="lenet300",
        epochs=3,
        progress=False,
        latency_rounds=1,
    )
    assert [r["name"] for r in rows] == ["baseline", "magnitude_90", "gradual_90"]
    weights = 64 * 300 + 300 * 100 + 100 * 10
    biases = 300 + 100 + 10
    for row in rows[1:]:
        # Made permanent: masks are gone, 10 % of the weights plus every bias remain.
        assert row["nonzeros"] <= round(0.1 * weights) + biases
        assert row["accuracy"] > 0.5
        assert row["size_csr_bytes"] < rows[0]["size_csr_bytes"] / 3
        assert row["size_bytes"] <= row["size_csr_bytes"]
    assert (
        rows[0]["size_csr_bytes"] > rows[0]["size_bytes"]
    )  # dense beats CSR when dense
    assert "size_csr_bytes" not in measure.format_table(rows)
