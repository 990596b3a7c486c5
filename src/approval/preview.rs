//! What a held statement would touch, for its approvers: the server's plan for it (EXPLAIN
//! without ANALYZE, asked by the wire on a side connection in the agent's role and database),
//! read into the estimated rows and the tables. A preview that cannot be had says why; it never
//! holds up the decision.

use serde::{Deserialize, Serialize};

/// The impact preview shown next to a held statement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    /// The planner's estimate of the rows the statement changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// The tables the plan reads or changes (`schema.table`), the changed one first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Why there is no estimate: "no preview: …", "preview failed: …", "preview timed out".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl Preview {
    pub fn unavailable(why: impl Into<String>) -> Preview {
        Preview {
            unavailable: Some(why.into()),
            ..Preview::default()
        }
    }

    /// One line for people: `about 42 rows; tables public.orders` or why there is none.
    pub fn summary(&self) -> String {
        if let Some(why) = &self.unavailable {
            return why.clone();
        }
        let rows = match self.rows {
            Some(1) => "about 1 row".to_owned(),
            Some(n) => format!("about {n} rows"),
            None => "rows not estimated".to_owned(),
        };
        if self.tables.is_empty() {
            rows
        } else {
            format!("{rows} (estimated); tables {}", self.tables.join(", "))
        }
    }

    /// A PostgreSQL plan as `EXPLAIN (VERBOSE, FORMAT JSON)` gives it: the rows are those of
    /// the ModifyTable node's input (the node itself estimates 0), the tables every relation
    /// named in the plan.
    pub fn from_pg_plan(json: &str) -> Preview {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
            return Preview::unavailable("preview failed: the plan is not JSON");
        };
        let Some(plan) = value.get(0).and_then(|p| p.get("Plan")) else {
            return Preview::unavailable("preview failed: no plan");
        };
        let estimate = |node: &serde_json::Value| {
            node.get("Plan Rows")
                .and_then(serde_json::Value::as_f64)
                .map(|r| r.max(0.0).round() as u64)
        };
        let rows = if plan["Node Type"] == "ModifyTable" {
            plan.get("Plans")
                .and_then(|p| p.get(0))
                .and_then(estimate)
                .or(Some(0))
        } else {
            estimate(plan)
        };
        let mut tables = Vec::new();
        let mut stack = vec![plan];
        while let Some(node) = stack.pop() {
            if let Some(name) = node.get("Relation Name").and_then(|v| v.as_str()) {
                let table = match node.get("Schema").and_then(|v| v.as_str()) {
                    Some(schema) => format!("{schema}.{name}"),
                    None => name.to_owned(),
                };
                if !tables.contains(&table) {
                    tables.push(table);
                }
            }
            if let Some(children) = node.get("Plans").and_then(|p| p.as_array()) {
                stack.extend(children.iter().rev());
            }
        }
        Preview {
            rows,
            tables,
            unavailable: None,
        }
    }
}

impl Preview {
    /// A MariaDB / MySQL plan as `EXPLAIN FORMAT=JSON` gives it: the rows are the first
    /// table's estimate (its `rows`, times `filtered` where given: for a single-table UPDATE or
    /// DELETE, the rows examined, an upper bound), the tables every `table_name` in the plan
    /// (as the statement names them, aliases included).
    pub fn from_mysql_plan(json: &str) -> Preview {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
            return Preview::unavailable("preview failed: the plan is not JSON");
        };
        let mut rows = None;
        let mut tables = Vec::new();
        let mut stack = vec![&value];
        while let Some(node) = stack.pop() {
            match node {
                serde_json::Value::Object(map) => {
                    if let Some(name) = map.get("table_name").and_then(|v| v.as_str()) {
                        if rows.is_none() {
                            let examined = map.get("rows").and_then(serde_json::Value::as_f64);
                            let filtered = map
                                .get("filtered")
                                .and_then(serde_json::Value::as_f64)
                                .unwrap_or(100.0);
                            rows = examined.map(|r| (r * filtered / 100.0).max(0.0).round() as u64);
                        }
                        if !tables.iter().any(|t| t == name) {
                            tables.push(name.to_owned());
                        }
                    }
                    // serde_json keeps keys sorted; plans nest their tables under
                    // `nested_loop`, `table`, `temporary_table`…, each visited in turn.
                    stack.extend(map.values().rev());
                }
                serde_json::Value::Array(items) => stack.extend(items.iter().rev()),
                _ => {}
            }
        }
        if tables.is_empty() {
            return Preview::unavailable("preview failed: no table in the plan");
        }
        Preview {
            rows,
            tables,
            unavailable: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_plan_gives_its_input_rows_and_tables() {
        let plan = r#"[{"Plan": {"Node Type": "ModifyTable", "Operation": "Delete",
            "Relation Name": "orders", "Schema": "public", "Plan Rows": 0,
            "Plans": [{"Node Type": "Hash Join", "Plan Rows": 8, "Plans": [
                {"Node Type": "Seq Scan", "Relation Name": "orders", "Schema": "public", "Plan Rows": 100},
                {"Node Type": "Seq Scan", "Relation Name": "dups", "Schema": "app", "Plan Rows": 8}]}]}}]"#;
        let p = Preview::from_pg_plan(plan);
        assert_eq!(p.rows, Some(8));
        assert_eq!(p.tables, ["public.orders", "app.dups"]);
        assert_eq!(
            p.summary(),
            "about 8 rows (estimated); tables public.orders, app.dups"
        );
        assert!(Preview::from_pg_plan("nope").unavailable.is_some());
        let mariadb = r#"{"query_block": {"select_id": 1, "nested_loop": [
            {"table": {"table_name": "a", "rows": 40, "filtered": 25}},
            {"table": {"table_name": "b", "rows": 3, "filtered": 100}}]}}"#;
        let p = Preview::from_mysql_plan(mariadb);
        assert_eq!(
            (p.rows, p.tables.clone()),
            (Some(10), vec!["a".into(), "b".into()])
        );
        let delete = r#"{"query_block": {"select_id": 1, "table": {"delete": 1, "table_name": "t", "rows": 3}}}"#;
        assert_eq!(Preview::from_mysql_plan(delete).rows, Some(3));
        assert_eq!(
            Preview::unavailable("preview timed out").summary(),
            "preview timed out"
        );
    }
}
