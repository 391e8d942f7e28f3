"""``checks.merged``: a shared table's one check result from its topics' results."""

from __future__ import annotations

from dagster import AssetCheckKey, AssetCheckResult, AssetCheckSeverity, AssetKey, MetadataValue

from dagster_project.checks import merged

KEY = AssetCheckKey(AssetKey("web"), "offset_continuity")


def _result(
    passed: bool, text: str, severity: AssetCheckSeverity = AssetCheckSeverity.ERROR
) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=KEY.name,
        asset_key=KEY.asset_key,
        passed=passed,
        severity=severity,
        description=text,
        metadata={"rows": MetadataValue.int(3)},
    )


def test_passed_only_when_every_topic_passed_with_the_worst_severity_and_each_topic_named() -> None:
    both = merged(KEY, [("a", _result(True, "fine")), ("b", _result(True, "also fine"))])
    assert both.passed and both.description == "topic a: fine\ntopic b: also fine"
    assert set(both.metadata) == {"topics", "a/rows", "b/rows"}
    warned = merged(
        KEY, [("a", _result(True, "fine")), ("b", _result(False, "late", AssetCheckSeverity.WARN))]
    )
    assert not warned.passed and warned.severity == AssetCheckSeverity.WARN
    failed = merged(
        KEY,
        [("a", _result(False, "holes")), ("b", _result(False, "late", AssetCheckSeverity.WARN))],
    )
    assert not failed.passed and failed.severity == AssetCheckSeverity.ERROR
    none = merged(KEY, [])
    assert none.passed and none.description == "No topic matches the pipeline yet."
