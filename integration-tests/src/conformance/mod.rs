//! The conformance suite: the executable form of DESIGN.md's shared semantics (rules 1–13)
//! and of `docs/semantics.md`.
//!
//! Every check is a `pub async fn name_of_the_behaviour(fixture: &Fixture)` that opens its own
//! namespaces through the [`Fixture`](crate::fixtures::Fixture), so checks run in parallel.
//! [`conformance_suite!`](crate::conformance_suite) turns all of them into one `#[test]` each
//! for a backend. Checks that depend on a capability test both sides: the feature works when
//! the flag is set, and the call is `Unsupported` when it is not.

/// Rule 5: latest state per agent, superseded and equal heartbeats, filters.
pub mod agents;
/// Rule 4: alert upsert, parameters, filters, lifecycle.
pub mod alerts;
/// Rule 11: portable and native backups, cross-backend migration, merges, damaged archives.
pub mod backup;
/// Parallel writers and retries.
pub mod concurrency;
/// Rule 3: the seven aggregations, epoch-aligned buckets, tags, `group_by`, ties.
pub mod history;
/// Rules 8, 9, 10, 13: errors, `close`, namespaces, capabilities, events, stats.
pub mod lifecycle;
/// Rule 2: ranges, tag filters, every operator on every field type, order, paging.
pub mod queries;
/// Rule 6: TTLs, expired-on-arrival counts, never reading expired data, `apply_retention`.
pub mod retention;
/// Rule 1: series upsert, sample keys, order, `created_at`.
pub mod series;
/// Rule 12: embeddings round-trip everywhere; similarity search where the capability is on.
pub mod similarity;
pub mod support;
/// Rule 7: hostile round trips, limits, rejected input, whole-batch rejection, time range and precision.
pub mod validation;

/// Expands to one `#[test]` per conformance check, grouped in one module per data kind
/// (`series::samples_are_sorted_by_timestamp`, `backup::truncated_archive_is_corrupted`…), for
/// the backend that `$fixture` opens. `$fixture` is an expression of type
/// `impl Future<Output = Option<Fixture>>`, evaluated once per check: `None` means the backend is
/// skipped here (see [`fixtures::skip`](crate::fixtures::skip)).
///
/// ```ignore
/// // tests/memory.rs
/// aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::memory());
/// ```
///
/// Each test runs on its own multi-threaded tokio runtime (like
/// `#[tokio::test(flavor = "multi_thread")]`), so the calling crate needs no tokio dependency.
#[macro_export]
macro_rules! conformance_suite {
    ($fixture:expr) => {
        $crate::__with_conformance_checks!(__conformance_tests!($fixture));
    };
}

/// The one list of checks: calls `$callback!` with the arguments given, a `;`, and every check
/// grouped by module, so the generated tests and [`checks`] can never disagree.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_conformance_checks {
    ($callback:ident ! ( $($args:tt)* )) => {
        $crate::$callback! {
            $($args)*;
                series {
                    metric_round_trips_exactly,
                    saving_a_series_again_adds_samples,
                    rewriting_a_sample_key_overwrites_the_value,
                    retried_batch_does_not_duplicate,
                    samples_at_one_timestamp_are_ordered_by_tags,
                    samples_are_sorted_by_timestamp,
                    metadata_is_overwritten_but_created_at_kept,
                    series_without_samples_is_stored,
                    one_batch_with_a_series_twice_merges,
                    large_series_round_trips,
                }
                queries {
                    time_ranges_are_half_open,
                    sub_microsecond_bounds_round_up,
                    empty_and_reversed_ranges,
                    tag_filter_matches_a_subset_of_tags,
                    series_left_without_samples_are_omitted,
                    series_only_finds_the_same_series_without_samples,
                    query_by_name_and_type,
                    every_operator_on_text_fields,
                    contains_treats_wildcards_literally,
                    every_operator_on_time_fields,
                    absent_values_match_only_ne_and_not_in,
                    unknown_filter_fields_are_invalid_input,
                    unknown_operators_and_mistyped_values_are_invalid_input,
                    sorting_orders_nulls_and_breaks_ties_by_id,
                    paging_covers_everything_without_overlap,
                    limit_zero_is_rejected_and_default_is_100,
                    query_bounds_outside_the_range_are_rejected,
                }
                history {
                    history_avg,
                    history_sum,
                    history_sum_keeps_small_terms_between_cancelling_values,
                    history_large_values_overflow_only_where_the_exact_sum_does,
                    history_min,
                    history_max,
                    history_count,
                    history_first,
                    history_last,
                    history_buckets_are_epoch_aligned,
                    history_range_is_half_open_and_skips_empty_buckets,
                    history_filters_by_tags,
                    history_group_by_puts_missing_tag_first,
                    history_merges_series_with_the_same_name,
                    history_first_and_last_break_ties,
                    history_rejects_bad_queries,
                    history_aggregates_many_samples,
                }
                alerts {
                    alert_round_trips_exactly,
                    alerts_upsert_by_id,
                    alerts_filter_by_status_and_source,
                    alerts_filter_by_severity_and_min_severity,
                    alerts_time_range_applies_to_start_time,
                    alerts_filter_by_labels,
                    every_operator_on_severity,
                    every_operator_on_labels,
                    absent_times_filter_and_sort,
                    alerts_sort_by_severity_rank,
                    alert_lifecycle_round_trips,
                }
                agents {
                    agent_state_round_trips_exactly,
                    latest_state_per_agent_is_kept,
                    stale_agent_state_is_superseded,
                    equal_heartbeat_replaces,
                    agent_states_filter_by_status,
                    agent_states_filter_by_heartbeat_after,
                    agent_states_filters_and_order,
                }
                retention {
                    already_expired_samples_are_counted_not_stored,
                    already_expired_alerts_are_counted_not_stored,
                    already_expired_agent_states_are_counted_not_stored,
                    expired_samples_are_never_read,
                    expired_alerts_are_never_read,
                    expired_agent_states_are_never_read,
                    apply_retention_removes_expired_data_and_reports_counts,
                    series_lives_while_it_has_a_live_sample_or_recent_update,
                    data_without_ttl_is_kept_forever,
                    ttl_options_are_checked,
                }
                validation {
                    hostile_strings_round_trip_in_metrics,
                    hostile_strings_round_trip_in_alerts,
                    hostile_strings_round_trip_in_agent_states,
                    length_limits_are_enforced,
                    tag_sets_are_bounded_in_count_and_bytes,
                    documents_are_bounded,
                    history_steps_are_bounded,
                    non_finite_values_are_rejected,
                    empty_names_are_rejected,
                    control_characters_are_rejected,
                    timestamps_before_1970_are_rejected,
                    timestamps_after_2262_are_rejected,
                    boundary_timestamps_are_accepted,
                    timestamps_are_truncated_to_microseconds,
                    invalid_metric_batch_writes_nothing,
                    invalid_alert_batch_writes_nothing,
                    invalid_agent_state_batch_writes_nothing,
                    reads_with_invalid_ids_are_invalid_input,
                }
                lifecycle {
                    missing_items_are_none,
                    namespaces_are_isolated,
                    calls_after_close_are_unavailable,
                    errors_name_the_operation_and_backend,
                    stats_counts_are_exact,
                    stats_size_grows_with_the_samples,
                    subscribe_follows_the_pub_sub_capability,
                    every_subscriber_receives_every_event,
                    capabilities_are_stable,
                }
                concurrency {
                    parallel_writers_lose_nothing,
                    parallel_retries_do_not_duplicate,
                    parallel_agent_state_writers_keep_the_latest,
                    parallel_alert_writers_lose_nothing,
                }
                backup {
                    backup_restores_into_a_fresh_namespace,
                    backup_restores_into_memory,
                    memory_backup_restores_into_backend,
                    archive_round_trips_floats_exactly,
                    long_series_survive_backup,
                    restore_merges_into_a_non_empty_store,
                    restore_applies_retention,
                    empty_store_round_trips,
                    backup_into_a_non_empty_directory_conflicts,
                    truncated_archive_is_corrupted,
                    garbled_data_file_is_corrupted,
                    garbled_manifest_is_corrupted,
                    manifest_count_mismatch_is_corrupted,
                    newer_archive_version_is_unsupported,
                    archive_missing_a_data_file_is_corrupted,
                    restore_from_a_missing_path_is_not_found,
                    native_backup_follows_the_capability,
                    native_restore_of_a_non_backup_is_rejected,
                    backup_during_writes_is_consistent,
                }
                similarity {
                    alert_embedding_round_trips_exactly,
                    agent_state_embedding_round_trips_exactly,
                    invalid_embeddings_are_rejected,
                    similarity_follows_the_capability,
                    similar_alerts_rank_like_the_reference,
                    equal_scores_are_ordered_by_id,
                    similarity_filters_apply,
                    item_target_excludes_itself,
                    bad_similarity_queries_are_invalid_input,
                    hostile_label_keys_filter_exactly,
                    huge_descriptions_and_free_form_ids_work,
                    own_embeddings_are_scored,
                    similar_agent_states_rank_like_the_reference,
                }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($fixture:expr; $($module:ident { $($check:ident),* $(,)? })*) => {
        $(
            #[allow(unused_imports)]
            mod $module {
                use super::*;
                $(
                    #[test]
                    fn $check() {
                        $crate::fixtures::run_check(stringify!($check), async {
                            let Some(fixture) = $fixture.await else { return };
                            $crate::conformance::$module::$check(&fixture).await;
                        });
                    }
                )*
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_names {
    (; $($module:ident { $($check:ident),* $(,)? })*) => {
        vec![$($(concat!(stringify!($module), "::", stringify!($check))),*),*]
    };
}

/// The names of every check, `module::check`, in the order the macro lists them.
pub fn checks() -> Vec<&'static str> {
    crate::__with_conformance_checks!(__conformance_names!())
}

#[cfg(test)]
mod tests {
    /// Every `pub async fn` of the check modules is listed in the macro (and nothing else).
    #[test]
    fn the_macro_lists_every_check() {
        let sources = [
            ("series", include_str!("series.rs")),
            ("queries", include_str!("queries.rs")),
            ("history", include_str!("history.rs")),
            ("alerts", include_str!("alerts.rs")),
            ("agents", include_str!("agents.rs")),
            ("retention", include_str!("retention.rs")),
            ("validation", include_str!("validation.rs")),
            ("lifecycle", include_str!("lifecycle.rs")),
            ("concurrency", include_str!("concurrency.rs")),
            ("backup", include_str!("backup.rs")),
            ("similarity", include_str!("similarity.rs")),
        ];
        let mut defined = Vec::new();
        for (module, text) in sources {
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ") {
                    let name = rest.split('(').next().unwrap_or_default();
                    defined.push(format!("{module}::{name}"));
                }
            }
        }
        let listed: Vec<String> = super::checks().into_iter().map(str::to_owned).collect();
        assert_eq!(listed, defined);
        assert!(listed.len() >= 60);
    }
}
