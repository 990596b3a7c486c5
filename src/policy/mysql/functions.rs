//! What a MariaDB function call does, by allowlist: a call is a plain read only when the
//! function is a built-in known not to change anything or reach outside the database.
//!
//! Known: MariaDB 10.11's built-in functions of the string, numeric, date and time, JSON,
//! aggregate, window, control-flow, conversion, comparison, hashing and information groups
//! (MariaDB Knowledge Base, "Built-in Functions"), reviewed one by one. Not reads: files
//! (`LOAD_FILE`), waits and load (`SLEEP`, `BENCHMARK`, `MASTER_POS_WAIT`,
//! `MASTER_GTID_WAIT`), sequences (`NEXTVAL`, `SETVAL`), keys read from server files
//! (`DES_ENCRYPT`, `DES_DECRYPT`), server-wide counters (`UUID_SHORT`), `LAST_INSERT_ID(expr)`
//! (it sets the session's value; without an argument it reads it), and every function not listed: stored functions
//! (`db.f()`), loadable UDFs (`sys_exec`) and anything newer than this list. User-level locks
//! (`GET_LOCK`, `RELEASE_LOCK`, `RELEASE_ALL_LOCKS`) are locks.

use crate::policy::functions::Effect;

/// Built-in functions reviewed as reads (lower case, sorted for binary search).
const READS: &[&str] = &[
    "abs",
    "acos",
    "adddate",
    "addtime",
    "aes_decrypt",
    "aes_encrypt",
    "any_value",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "avg",
    "bin",
    "bit_and",
    "bit_count",
    "bit_length",
    "bit_or",
    "bit_xor",
    "cast",
    "ceil",
    "ceiling",
    "char",
    "char_length",
    "character_length",
    "charset",
    "chr",
    "coalesce",
    "coercibility",
    "collation",
    "column_check",
    "column_exists",
    "column_get",
    "column_json",
    "column_list",
    "compress",
    "concat",
    "concat_ws",
    "connection_id",
    "conv",
    "convert",
    "convert_tz",
    "cos",
    "cot",
    "count",
    "crc32",
    "crc32c",
    "cume_dist",
    "curdate",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "curtime",
    "database",
    "date",
    "date_add",
    "date_format",
    "date_sub",
    "datediff",
    "day",
    "dayname",
    "dayofmonth",
    "dayofweek",
    "dayofyear",
    "decode_histogram",
    "degrees",
    "dense_rank",
    "elt",
    "exp",
    "export_set",
    "extract",
    "extractvalue",
    "field",
    "find_in_set",
    "first_value",
    "floor",
    "format",
    "format_bytes",
    "format_pico_time",
    "found_rows",
    "from_base64",
    "from_days",
    "from_unixtime",
    "get_format",
    "greatest",
    "group_concat",
    "hex",
    "hour",
    "if",
    "ifnull",
    "inet6_aton",
    "inet6_ntoa",
    "inet_aton",
    "inet_ntoa",
    "insert",
    "instr",
    "interval",
    "is_free_lock",
    "is_ipv4",
    "is_ipv4_compat",
    "is_ipv4_mapped",
    "is_ipv6",
    "is_used_lock",
    "isnull",
    "json_array",
    "json_array_append",
    "json_array_insert",
    "json_arrayagg",
    "json_compact",
    "json_contains",
    "json_contains_path",
    "json_depth",
    "json_detailed",
    "json_equals",
    "json_exists",
    "json_extract",
    "json_insert",
    "json_keys",
    "json_length",
    "json_loose",
    "json_merge",
    "json_merge_patch",
    "json_merge_preserve",
    "json_normalize",
    "json_object",
    "json_objectagg",
    "json_overlaps",
    "json_pretty",
    "json_query",
    "json_quote",
    "json_remove",
    "json_replace",
    "json_search",
    "json_set",
    "json_type",
    "json_unquote",
    "json_valid",
    "json_value",
    "lag",
    "last_day",
    "last_insert_id",
    "last_value",
    "lastval",
    "lcase",
    "lead",
    "least",
    "left",
    "length",
    "lengthb",
    "ln",
    "localtime",
    "localtimestamp",
    "locate",
    "log",
    "log10",
    "log2",
    "lower",
    "lpad",
    "ltrim",
    "make_set",
    "makedate",
    "maketime",
    "match",
    "max",
    "md5",
    "median",
    "microsecond",
    "mid",
    "min",
    "minute",
    "mod",
    "month",
    "monthname",
    "natural_sort_key",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "nvl",
    "nvl2",
    "oct",
    "octet_length",
    "ord",
    "overlay",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "period_add",
    "period_diff",
    "pi",
    "position",
    "pow",
    "power",
    "quarter",
    "quote",
    "radians",
    "rand",
    "rank",
    "regexp_instr",
    "regexp_replace",
    "regexp_substr",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_count",
    "row_number",
    "rpad",
    "rtrim",
    "schema",
    "sec_to_time",
    "second",
    "session_user",
    "sformat",
    "sha",
    "sha1",
    "sha2",
    "sign",
    "sin",
    "soundex",
    "space",
    "sqrt",
    "std",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "str_to_date",
    "strcmp",
    "subdate",
    "substr",
    "substring",
    "substring_index",
    "subtime",
    "sum",
    "sys_guid",
    "sysdate",
    "system_user",
    "tan",
    "time",
    "time_format",
    "time_to_sec",
    "timediff",
    "timestamp",
    "timestampadd",
    "timestampdiff",
    "to_base64",
    "to_char",
    "to_days",
    "to_seconds",
    "trim",
    "trim_oracle",
    "truncate",
    "ucase",
    "uncompress",
    "uncompressed_length",
    "unhex",
    "unix_timestamp",
    "upper",
    "user",
    "utc_date",
    "utc_time",
    "utc_timestamp",
    "uuid",
    "values",
    "var_pop",
    "var_samp",
    "variance",
    "version",
    "week",
    "weekday",
    "weekofyear",
    "weight_string",
    "year",
    "yearweek",
];

/// User-level lock functions.
const LOCKS: &[&str] = &["get_lock", "release_all_locks", "release_lock"];

/// The built-in functions reviewed as reads (for tests and documentation).
pub fn reads() -> &'static [&'static str] {
    READS
}

/// What calling `name` (as written, any case, possibly qualified) does on MariaDB.
pub fn effect(name: &str) -> Effect {
    let name = name.to_ascii_lowercase();
    // A qualified name is a stored function (built-ins are never qualified).
    if name.contains('.') {
        return Effect::Call;
    }
    if LOCKS.binary_search(&name.as_str()).is_ok() {
        return Effect::Lock;
    }
    if READS.binary_search(&name.as_str()).is_ok() {
        return Effect::Read;
    }
    Effect::Call
}

/// MariaDB functions that are one function under several names: a rule naming one matches
/// every spelling.
const SYNONYMS: &[&[&str]] = &[
    &["substring", "substr", "mid"],
    &["lower", "lcase"],
    &["upper", "ucase"],
    &["ceil", "ceiling"],
    &["char_length", "character_length"],
    &["length", "octet_length"],
    &["position", "locate", "instr"],
    &["now", "current_timestamp", "localtime", "localtimestamp"],
    &["curdate", "current_date"],
    &["curtime", "current_time"],
    &["database", "schema"],
    &["user", "session_user", "system_user"],
    &["sha", "sha1"],
    &["pow", "power"],
    &["ifnull", "nvl"],
    &["std", "stddev", "stddev_pop"],
    &["variance", "var_pop"],
    &["date_add", "adddate"],
    &["date_sub", "subdate"],
];

pub(super) fn synonyms(name: &str) -> Option<&'static [&'static str]> {
    let lower = name.to_ascii_lowercase();
    SYNONYMS
        .iter()
        .copied()
        .find(|g| g.contains(&lower.as_str()))
}

/// The MariaDB functions a parser special form stands for (`SUBSTRING(x FROM 1)` and
/// `SUBSTR(x, 1)` parse into one node): the name and its synonyms, so a rule naming any of
/// them matches every spelling.
pub(super) fn special_form(expr: &sqlparser::ast::Expr) -> &'static [&'static str] {
    match expr {
        sqlparser::ast::Expr::Substring { .. } => &["substring", "substr", "mid"],
        sqlparser::ast::Expr::Trim { .. } => &["trim"],
        sqlparser::ast::Expr::Position { .. } => &["position", "locate", "instr"],
        sqlparser::ast::Expr::Extract { .. } => &["extract"],
        sqlparser::ast::Expr::Ceil { .. } => &["ceil", "ceiling"],
        sqlparser::ast::Expr::Floor { .. } => &["floor"],
        sqlparser::ast::Expr::Overlay { .. } => &["overlay"],
        sqlparser::ast::Expr::Cast { .. } => &["cast", "convert"],
        sqlparser::ast::Expr::Convert { .. } => &["convert", "cast"],
        sqlparser::ast::Expr::MatchAgainst { .. } => &["match"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_for_binary_search() {
        assert!(READS.windows(2).all(|w| w[0] < w[1]), "READS not sorted");
        assert!(LOCKS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn effects() {
        for f in ["SUBSTR", "concat", "json_extract", "now", "count"] {
            assert_eq!(effect(f), Effect::Read, "{f}");
        }
        for f in [
            "load_file",
            "sleep",
            "benchmark",
            "master_pos_wait",
            "master_gtid_wait",
            "sys_exec",
            "nextval",
            "setval",
            "des_decrypt",
            "shop.f",
            "upper_case_udf",
        ] {
            assert_eq!(effect(f), Effect::Call, "{f}");
        }
        assert_eq!(effect("GET_LOCK"), Effect::Lock);
    }
}
