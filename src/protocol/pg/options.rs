//! The session's reason from the startup packet: a `tollgate.reason` parameter, or the
//! `options` parameter ordinary drivers send (`options=-c tollgate.reason=…`, libpq's
//! `PGOPTIONS`), read with PostgreSQL's own splitting rules (`pg_split_opts`: words separated
//! by ASCII whitespace, a backslash keeps the next character). Both are taken out of the
//! parameters before anything else looks at them, so the server never sees them; an `options`
//! that sets anything else stays, and is refused like any `options`.

/// The custom setting that carries the reason.
pub const REASON: &str = crate::policy::reason::SESSION_SETTING;

/// Removes the reason from the startup parameters and returns it (as sent).
pub fn take_reason(params: &mut Vec<(String, String)>) -> Option<String> {
    let mut reason = None;
    params.retain(|(k, v)| {
        if k.eq_ignore_ascii_case(REASON) {
            reason = Some(v.clone());
            return false;
        }
        if k == "options"
            && let Some(r) = reason_only(v)
        {
            reason.get_or_insert(r);
            return false;
        }
        true
    });
    reason
}

/// The reason when `options` sets `tollgate.reason` and nothing else.
fn reason_only(options: &str) -> Option<String> {
    let words = split(options);
    let mut found = None;
    let mut i = 0;
    while i < words.len() {
        let setting = match words[i].as_str() {
            "-c" => {
                i += 1;
                words.get(i)?.as_str()
            }
            w => w.strip_prefix("--").or_else(|| w.strip_prefix("-c"))?,
        };
        let (name, value) = setting.split_once('=')?;
        // PostgreSQL reads `-` in a setting name given this way as `_`.
        if name.replace('-', "_").to_ascii_lowercase() != REASON {
            return None;
        }
        found = Some(value.to_owned());
        i += 1;
    }
    found
}

/// `pg_split_opts`: words separated by ASCII whitespace; a backslash keeps the next character.
fn split(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                c if c.is_ascii_whitespace() => break,
                '\\' => {
                    if let Some(next) = chars.next() {
                        word.push(next);
                    }
                }
                c => word.push(c),
            }
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Startup parameters, the reason taken, the parameters left.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, usize);

    #[test]
    fn the_reason_is_taken_out_and_nothing_else() {
        let cases: &[Case<'_>] = &[
            (&[("tollgate.reason", "INC-1")], Some("INC-1"), 0),
            (
                &[("options", r"-c tollgate.reason=INC-1\ fix\ dups")],
                Some("INC-1 fix dups"),
                0,
            ),
            (&[("options", "--tollgate.reason=x")], Some("x"), 0),
            (&[("options", "-ctollgate.reason=x")], Some("x"), 0),
            // Anything else in options: left for the refusal of `options`.
            (
                &[("options", "-c tollgate.reason=x -c role=admin")],
                None,
                1,
            ),
            (&[("options", "-c role=admin")], None, 1),
            (&[("options", "-c tollgate.reason")], None, 1),
            (&[("options", "")], None, 1),
            (&[("application_name", "psql")], None, 1),
        ];
        for (list, want, left) in cases {
            let mut p = params(list);
            assert_eq!(take_reason(&mut p).as_deref(), *want, "{list:?}");
            assert_eq!(p.len(), *left, "{list:?}");
        }
    }
}
