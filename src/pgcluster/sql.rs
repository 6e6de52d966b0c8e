//! Quoting for the few SQL statements the cluster runner writes itself (role and database
//! names and passwords chosen by tests).

/// `value` as a SQL string literal: `'it''s'`.
#[must_use]
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `name` as a quoted SQL identifier: `"My ""odd"" name"`.
#[must_use]
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_identifiers_are_escaped() {
        let cases = [
            (quote_literal("pw"), "'pw'"),
            (quote_literal("it's"), "'it''s'"),
            (quote_literal(""), "''"),
            (quote_ident("alice"), "\"alice\""),
            (quote_ident("a\"b"), "\"a\"\"b\""),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
