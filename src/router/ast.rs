//! The parser fallback: parse one SELECT-like statement with `sqlparser` (PostgreSQL dialect)
//! and walk the tree for everything the lexical scan could not settle.
//!
//! Reached only when the scan found a call it could not prove read-only (most often a table
//! alias with a column list, or a user function). The walk re-checks every rule on the exact
//! tree: nested statements (data-modifying CTEs), locking clauses, `SELECT INTO`, and every
//! function call, in expressions and in FROM. A statement the parser rejects is a write.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, ObjectNamePart, Query, Select, Statement, TableFactor};
use sqlparser::ast::{Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::functions::{FnVerdict, Resolver};
use super::{Class, Reason, SessionEffect};

/// Classify a SELECT-like statement by parsing it.
pub(crate) fn classify_parsed(text: &str, resolver: Resolver<'_>) -> Class {
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, text) else {
        return Class::write(Reason::Unparseable);
    };
    let mut walk = Walk { resolver, top_level: true, found: Found::default() };
    for statement in &statements {
        walk.top_level = true;
        let _ = statement.visit(&mut walk);
    }
    walk.found.class()
}

/// What the walk found; the worst finding decides.
#[derive(Debug, Default)]
struct Found {
    writing_statement: bool,
    locking: bool,
    into: bool,
    writer: Option<SessionEffect>,
    volatile: bool,
    unknown: bool,
    node_local: bool,
}

impl Found {
    fn class(&self) -> Class {
        let reason = if self.writing_statement {
            Reason::WritingCte
        } else if self.locking {
            Reason::LockingClause
        } else if self.into {
            Reason::SelectInto
        } else if self.writer.is_some() {
            Reason::WritingFunction
        } else if self.volatile {
            Reason::VolatileFunction
        } else if self.unknown {
            Reason::UnknownFunction
        } else if self.node_local {
            return Class::node_local();
        } else {
            return Class::read(Reason::ParsedRead);
        };
        let session = self.writer.unwrap_or(SessionEffect::None);
        Class::write(reason).with_session(session)
    }

    fn call(&mut self, verdict: FnVerdict) {
        match verdict {
            FnVerdict::ReadOnly => {}
            FnVerdict::Writer(effect) => {
                self.writer = Some(self.writer.unwrap_or(SessionEffect::None).max(effect));
            }
            FnVerdict::NodeLocal => self.node_local = true,
            FnVerdict::Volatile => self.volatile = true,
            FnVerdict::Unknown => self.unknown = true,
        }
    }
}

struct Walk<'a> {
    resolver: Resolver<'a>,
    /// The next statement visited is the top-level one (a query), not a nested write.
    top_level: bool,
    found: Found,
}

impl Walk<'_> {
    fn resolve(&self, name: &ObjectName) -> FnVerdict {
        let parts: Option<Vec<(&str, bool)>> = name
            .0
            .iter()
            .map(|part| match part {
                ObjectNamePart::Identifier(ident) => Some((ident.value.as_str(), ident.quote_style.is_some())),
                ObjectNamePart::Function(_) => None,
            })
            .collect();
        match parts.as_deref() {
            Some([name]) => self.resolver.resolve_raw(None, *name),
            Some([.., schema, name]) => self.resolver.resolve_raw(Some(*schema), *name),
            _ => FnVerdict::Unknown,
        }
    }
}

impl Visitor for Walk<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        let top_level = std::mem::replace(&mut self.top_level, false);
        if !(top_level && matches!(statement, Statement::Query(_))) {
            self.found.writing_statement = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.found.locking |= !query.locks.is_empty();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        self.found.into |= select.into.is_some();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table { name, args: Some(_), .. } | TableFactor::Function { name, .. } => {
                let verdict = self.resolve(name);
                self.found.call(verdict);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            let verdict = self.resolve(&function.name);
            self.found.call(verdict);
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::functions::AllowList;
    use crate::router::Access;

    fn parsed(sql: &str) -> Class {
        let allow = AllowList::default();
        classify_parsed(sql, Resolver { catalog: None, allow: &allow })
    }

    #[test]
    fn walk_finds_everything() {
        let cases = [
            ("SELECT a FROM generate_series(1, 3) g(a)", Access::Read, Reason::ParsedRead),
            ("SELECT * FROM f(1) x(a)", Access::Write, Reason::UnknownFunction),
            ("SELECT count(*) FROM t WHERE g(x) > 1", Access::Write, Reason::UnknownFunction),
            ("SELECT * FROM nextval('s') n(v)", Access::Write, Reason::WritingFunction),
            ("WITH w AS (DELETE FROM t RETURNING *) SELECT * FROM w", Access::Write, Reason::WritingCte),
            ("SELECT * FROM t FOR UPDATE", Access::Write, Reason::LockingClause),
            ("SELECT * INTO t2 FROM t", Access::Write, Reason::SelectInto),
            ("SELECT FROM WHERE (", Access::Write, Reason::Unparseable),
        ];
        for (sql, access, reason) in cases {
            let class = parsed(sql);
            assert_eq!((class.access, class.reason), (access, reason), "{sql}");
        }
    }
}
