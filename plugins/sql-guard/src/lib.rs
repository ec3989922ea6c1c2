//! sql-guard: denies a `tools/call` whose SQL arguments would destroy data or change the schema or
//! privileges: DROP, TRUNCATE, ALTER, GRANT / REVOKE, DELETE or UPDATE without a WHERE clause (or
//! with an always-true one such as `WHERE 1=1`), INSERT OVERWRITE / CREATE OR REPLACE TABLE, and
//! several statements in one argument. The SQL is parsed with `sqlparser` and every statement of the
//! tree is looked at, those nested in CTEs, EXPLAIN, PREPARE and trigger or procedure bodies the
//! parser reads included, and the constant SQL text of EXECUTE (dynamic SQL) too. The reason names the finding and the argument,
//! never the SQL text.
//!
//! Settings (`sql-guard.toml`): `tools` (`server:tool` patterns, default every tool), `arguments`
//! (argument names or dotted paths holding SQL, default `sql`, `query`, `statement`), `dialect`
//! (default `generic`), `deny` (the finding kinds refused, default all but `replace`) and
//! `on_parse_error` (`abstain-unless-keyword` by default: text that does not parse is refused only
//! when a statement in it starts with a destructive keyword, so prose in a search tool's `query`
//! goes through) and `max_parse_bytes` (16 KiB: longer text is only scanned for such keywords, to
//! stay within the gateway's deadline).
use policy_sdk::{Decision, Phases, Policy, Settings, ToolCall, pattern};
use serde::Deserialize;
use serde_json::Value;
use sqlparser::ast::{
    BinaryOperator, Expr, InTarget, SetExpr, SqliteOnConflict, Statement, UnaryOperator,
    Value as SqlValue, Visit, Visitor,
};
use sqlparser::dialect::{Dialect, dialect_from_str};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;
use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::ops::ControlFlow;

/// What the guard finds; `deny` lists the kinds it refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `DROP` of any object (table, view, schema, database, index, function, user, ...).
    Drop,
    /// `TRUNCATE`.
    Truncate,
    /// `ALTER` of any object, and `RENAME TABLE`.
    Alter,
    /// `GRANT`, `REVOKE`, `DENY` and `ALTER DEFAULT PRIVILEGES`.
    Grant,
    /// `DELETE` with no `WHERE`, or an always-true one.
    DeleteWithoutWhere,
    /// `UPDATE` with no `WHERE`, or an always-true one.
    UpdateWithoutWhere,
    /// More than one statement in one argument.
    MultipleStatements,
    /// Statements that replace a whole table's rows: `INSERT OVERWRITE`, `CREATE OR REPLACE TABLE`.
    Overwrite,
    /// `CREATE OR REPLACE` / `CREATE OR ALTER` of other objects (views, functions, procedures...),
    /// `REPLACE INTO`, `INSERT OR REPLACE`. Not refused unless listed in `deny`.
    Replace,
}

impl Kind {
    /// Every kind, in the order of the docs.
    pub const ALL: [Kind; 9] = [
        Kind::Drop,
        Kind::Truncate,
        Kind::Alter,
        Kind::Grant,
        Kind::DeleteWithoutWhere,
        Kind::UpdateWithoutWhere,
        Kind::MultipleStatements,
        Kind::Overwrite,
        Kind::Replace,
    ];

    /// The kind as `deny` and the denial reasons spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Drop => "drop",
            Kind::Truncate => "truncate",
            Kind::Alter => "alter",
            Kind::Grant => "grant",
            Kind::DeleteWithoutWhere => "delete-without-where",
            Kind::UpdateWithoutWhere => "update-without-where",
            Kind::MultipleStatements => "multiple-statements",
            Kind::Overwrite => "overwrite",
            Kind::Replace => "replace",
        }
    }

    /// Refused when the settings do not say otherwise.
    pub fn denied_by_default(self) -> bool {
        self != Kind::Replace
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Drop => "a DROP statement",
            Kind::Truncate => "a TRUNCATE statement",
            Kind::Alter => "an ALTER or RENAME statement",
            Kind::Grant => "a GRANT, REVOKE or DENY statement",
            Kind::DeleteWithoutWhere => "a DELETE with no WHERE clause, or an always-true one",
            Kind::UpdateWithoutWhere => "an UPDATE with no WHERE clause, or an always-true one",
            Kind::MultipleStatements => "several statements",
            Kind::Overwrite => {
                "a statement that replaces a table's rows (INSERT OVERWRITE or CREATE OR REPLACE TABLE)"
            }
            Kind::Replace => "a CREATE OR REPLACE, CREATE OR ALTER or REPLACE INTO statement",
        }
    }

    fn advice(self) -> &'static str {
        match self {
            Kind::DeleteWithoutWhere => "add a WHERE clause that selects the rows to delete",
            Kind::UpdateWithoutWhere => "add a WHERE clause that selects the rows to update",
            Kind::MultipleStatements => "send one statement per call",
            _ => "the gateway does not forward destructive SQL; ask a person to run it",
        }
    }
}

/// What to do with an argument that does not parse as SQL of the configured dialect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnParseError {
    /// Refuse it (`unparseable-sql`): only SQL the guard can read goes through.
    Deny,
    /// Refuse it only when a statement in it starts with a destructive keyword (`DROP TABLE`,
    /// `TRUNCATE`, `DELETE ... FROM`, ...), comments and quoted text aside; abstain otherwise.
    #[default]
    AbstainUnlessKeyword,
    /// Never refuse it.
    Abstain,
}

/// The dialects `dialect` accepts (`postgres` and `sparksql` are accepted too, as aliases).
pub const DIALECTS: &[&str] = &[
    "generic",
    "ansi",
    "postgresql",
    "mysql",
    "sqlite",
    "mssql",
    "snowflake",
    "bigquery",
    "redshift",
    "clickhouse",
    "duckdb",
    "databricks",
    "hive",
    "spark",
    "oracle",
    "teradata",
];

/// Operator settings (`sql-guard.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSettings {
    /// `server:tool` patterns the guard applies to.
    pub tools: Vec<String>,
    /// Argument names (or dotted paths into object arguments) that hold SQL.
    pub arguments: Vec<String>,
    /// The SQL dialect to parse with (see [`DIALECTS`]).
    pub dialect: String,
    /// The finding kinds refused.
    pub deny: Vec<Kind>,
    /// What to do with text that does not parse.
    pub on_parse_error: OnParseError,
    /// Longest argument parsed, in bytes; a longer one is only scanned for destructive keywords.
    pub max_parse_bytes: usize,
}

/// Default of `max_parse_bytes`: a few milliseconds of parsing in the sandbox, well within the
/// gateway's 10 ms deadline.
pub const DEFAULT_MAX_PARSE_BYTES: usize = 16 * 1024;

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            tools: vec!["*:*".into()],
            arguments: vec!["sql".into(), "query".into(), "statement".into()],
            dialect: "generic".into(),
            deny: Kind::ALL
                .into_iter()
                .filter(|k| k.denied_by_default())
                .collect(),
            on_parse_error: OnParseError::default(),
            max_parse_bytes: DEFAULT_MAX_PARSE_BYTES,
        }
    }
}

impl Settings for GuardSettings {
    fn validate(&self) -> Result<(), String> {
        self.tools.iter().try_for_each(|p| pattern::validate(p))?;
        if self.arguments.is_empty() {
            return Err("arguments is empty: name at least one argument that holds SQL".into());
        }
        if let Some(bad) = self
            .arguments
            .iter()
            .find(|a| a.split('.').any(|seg| seg.is_empty()))
        {
            return Err(format!(
                "invalid argument path {bad:?}: expected a name or a dotted path such as \"params.sql\""
            ));
        }
        if self.max_parse_bytes == 0 {
            return Err("max_parse_bytes must be at least 1".into());
        }
        if dialect_from_str(&self.dialect).is_none() {
            return Err(format!(
                "unknown dialect {:?}: expected one of {}",
                self.dialect,
                DIALECTS.join(", ")
            ));
        }
        Ok(())
    }
}

impl GuardSettings {
    fn denies(&self, kind: Kind) -> bool {
        self.deny.contains(&kind)
    }
}

/// The rule.
pub struct SqlGuard;

impl Policy for SqlGuard {
    type Settings = GuardSettings;
    const PHASES: Phases = Phases::CALL;
    // No CALL_TRIGGERS: which arguments hold SQL is a setting, keywords match in any case, and with
    // `on_parse_error = "deny"` any text may be refused, so no fixed byte list covers every finding.

    fn call(call: &ToolCall, settings: &GuardSettings) -> Decision {
        if !pattern::any_matches(&settings.tools, &call.server, &call.tool) {
            return Decision::abstain();
        }
        let Some(raw) = call.arguments.as_deref() else {
            return Decision::abstain();
        };
        // Fast path: without escapes, a key is in the JSON text byte for byte, between quotes. A call
        // that names none of the SQL arguments is not parsed at all.
        let named = |path: &str| {
            mentions_key(raw, path) || mentions_key(raw, path.split('.').next().unwrap_or(path))
        };
        if !raw.contains('\\') && !settings.arguments.iter().any(|a| named(a)) {
            return Decision::abstain();
        }
        let Ok(args) = serde_json::from_str::<Value>(raw) else {
            return Decision::abstain();
        };
        let Some(dialect) = dialect_from_str(&settings.dialect) else {
            // `validate` refused it at load.
            return Decision::abstain();
        };
        for name in &settings.arguments {
            let path = format!("arguments.{name}");
            let found = match lookup(&args, name) {
                Some(Value::String(sql)) => check(sql, &*dialect, settings, 0).map(|f| (f, path)),
                Some(Value::Array(items)) => items.iter().enumerate().find_map(|(i, item)| {
                    let sql = item.as_str()?;
                    check(sql, &*dialect, settings, 0).map(|f| (f, format!("{path}[{i}]")))
                }),
                _ => None,
            };
            if let Some((finding, path)) = found {
                return finding.decision(&path, &settings.dialect);
            }
        }
        Decision::abstain()
    }
}

/// `key` between double quotes somewhere in `raw`.
fn mentions_key(raw: &str, key: &str) -> bool {
    !key.is_empty()
        && raw
            .match_indices(key)
            .any(|(i, _)| raw[..i].ends_with('"') && raw[i + key.len()..].starts_with('"'))
}

/// The argument `path` names: a top-level key as given, else the dotted path into objects.
fn lookup<'v>(args: &'v Value, path: &str) -> Option<&'v Value> {
    let top = args.as_object()?;
    if let Some(v) = top.get(path) {
        return Some(v);
    }
    if !path.contains('.') {
        return None;
    }
    path.split('.')
        .try_fold(args, |v, seg| v.as_object()?.get(seg))
}

/// Why an argument is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Finding {
    /// A statement of a refused kind (not `MultipleStatements`).
    Statement(Kind),
    /// This many top-level statements.
    Statements(usize),
    /// Text that does not parse, with the destructive keyword a statement in it starts with.
    Unparseable(Option<(Kind, &'static str)>),
    /// Text over `max_parse_bytes` (its length, the limit), in which a statement starts with a
    /// destructive keyword.
    TooLong(usize, usize, (Kind, &'static str)),
}

impl Finding {
    fn decision(&self, path: &str, dialect: &str) -> Decision {
        let dialect = dialect.to_ascii_lowercase();
        match *self {
            Finding::Statement(kind) => Decision::deny(
                "destructive-sql",
                format!(
                    "{path} holds {} (sql-guard finding {}); {}",
                    kind.what(),
                    kind.name(),
                    kind.advice()
                ),
            ),
            Finding::Statements(n) => Decision::deny(
                "multiple-statements",
                format!(
                    "{path} holds {n} SQL statements (sql-guard finding multiple-statements); {}",
                    Kind::MultipleStatements.advice()
                ),
            ),
            Finding::Unparseable(Some((kind, keyword))) => Decision::deny(
                "unparseable-sql",
                format!(
                    "{path} is not SQL the guard can parse ({dialect} dialect) and a statement in it \
                     starts with {keyword} (sql-guard finding {}); it cannot be checked, so it is \
                     not forwarded: rewrite it as one standard statement",
                    kind.name()
                ),
            ),
            Finding::TooLong(len, max, (kind, keyword)) => Decision::deny(
                "sql-too-long",
                format!(
                    "{path} is {len} bytes of SQL, over the {max} the guard parses, and a statement \
                     in it starts with {keyword} (sql-guard finding {}); it cannot be checked, so \
                     it is not forwarded: send shorter statements",
                    kind.name()
                ),
            ),
            Finding::Unparseable(None) => Decision::deny(
                "unparseable-sql",
                format!(
                    "{path} is not SQL the guard can parse ({dialect} dialect) and unparseable SQL \
                     is refused (sql-guard on_parse_error = \"deny\"); rewrite it as one \
                     standard statement"
                ),
            ),
        }
    }
}

/// Deepest EXECUTE-inside-EXECUTE string the guard parses.
const MAX_DYNAMIC_DEPTH: u32 = 3;

/// The first refused finding in `sql`. `depth` > 0 for the string of an EXECUTE: there, text that
/// does not parse is only refused for a destructive keyword (it may well be no SQL at all).
fn check(
    sql: &str,
    dialect: &dyn Dialect,
    settings: &GuardSettings,
    depth: u32,
) -> Option<Finding> {
    if sql.len() > settings.max_parse_bytes {
        // Too long to parse within the deadline: scan it (a DELETE or UPDATE counts whatever its
        // WHERE, since padding must not buy a pass), and count its statements.
        let (keyword, statements) = lexical(sql, settings, true);
        return match keyword {
            Some(k) => Some(Finding::TooLong(sql.len(), settings.max_parse_bytes, k)),
            None => (statements > 1 && settings.denies(Kind::MultipleStatements))
                .then_some(Finding::Statements(statements)),
        };
    }
    let mut finder = Finder {
        dialect,
        settings,
        depth,
    };
    match for_each_statement(dialect, sql, |statement| statement.visit(&mut finder)) {
        Ok(ControlFlow::Break(finding)) => Some(finding),
        Ok(ControlFlow::Continue(n)) => {
            (n > 1 && settings.denies(Kind::MultipleStatements)).then_some(Finding::Statements(n))
        }
        Err(_) => {
            let mode = if depth > 0 {
                OnParseError::AbstainUnlessKeyword
            } else {
                settings.on_parse_error
            };
            let keyword = || lexical(sql, settings, false).0;
            match mode {
                OnParseError::Abstain => None,
                OnParseError::Deny => Some(Finding::Unparseable(keyword())),
                OnParseError::AbstainUnlessKeyword => {
                    keyword().map(|k| Finding::Unparseable(Some(k)))
                }
            }
        }
    }
}

/// Parses `sql` as `Parser::parse_sql` does, but hands each statement to `each` as soon as it is
/// parsed instead of keeping them all (a statement's tree is kilobytes: thousands of them would
/// outgrow the sandbox's memory). The first finding is kept while the rest is parsed: text that
/// does not parse as a whole is judged as such. Stricter than `parse_sql`: text after a statement
/// must start the next one with `;`, where `parse_sql` stops quietly at a stray `END`.
fn for_each_statement(
    dialect: &dyn Dialect,
    sql: &str,
    mut each: impl FnMut(&Statement) -> ControlFlow<Finding>,
) -> Result<ControlFlow<Finding, usize>, ParserError> {
    let mut parser = Parser::new(dialect).try_with_sql(sql)?;
    let mut count = 0;
    let mut found = None;
    loop {
        let mut delimited = count == 0;
        while parser.consume_token(&Token::SemiColon) {
            delimited = true;
        }
        if parser.peek_token_ref().token == Token::EOF {
            return Ok(found.map_or(ControlFlow::Continue(count), ControlFlow::Break));
        }
        if !delimited {
            return Err(ParserError::ParserError("expected end of statement".into()));
        }
        let statement = parser.parse_statement()?;
        count += 1;
        if found.is_none()
            && let ControlFlow::Break(finding) = each(&statement)
        {
            found = Some(finding);
        }
    }
}

/// Walks every statement of a parsed tree (top-level, in CTEs, EXPLAIN, PREPARE, bodies).
struct Finder<'a> {
    dialect: &'a dyn Dialect,
    settings: &'a GuardSettings,
    depth: u32,
}

impl Visitor for Finder<'_> {
    type Break = Finding;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<Finding> {
        if let Some(kind) = classify(statement)
            && self.settings.denies(kind)
        {
            return ControlFlow::Break(Finding::Statement(kind));
        }
        // Dynamic SQL: `EXECUTE IMMEDIATE '...'`, `EXEC ('...')`, `EXEC sp_executesql N'...'`.
        if let Some(sql) = dynamic_sql(statement)
            && self.depth < MAX_DYNAMIC_DEPTH
            && let Some(finding) = check(&sql, self.dialect, self.settings, self.depth + 1)
        {
            return ControlFlow::Break(match finding {
                Finding::Unparseable(Some((kind, _))) => Finding::Statement(kind),
                other => other,
            });
        }
        ControlFlow::Continue(())
    }
}

/// The finding one statement makes on its own (nested statements are visited separately).
fn classify(statement: &Statement) -> Option<Kind> {
    match statement {
        Statement::Query(_) => None,
        Statement::Insert(insert) => {
            if insert.overwrite {
                Some(Kind::Overwrite)
            } else if insert.replace_into || matches!(insert.or, Some(SqliteOnConflict::Replace)) {
                Some(Kind::Replace)
            } else {
                None
            }
        }
        Statement::Delete(delete) => {
            no_real_where(delete.selection.as_ref()).then_some(Kind::DeleteWithoutWhere)
        }
        Statement::Update(update) => {
            no_real_where(update.selection.as_ref()).then_some(Kind::UpdateWithoutWhere)
        }
        Statement::Truncate(_) => Some(Kind::Truncate),
        Statement::Drop { .. } => Some(Kind::Drop),
        Statement::AlterTable(_) | Statement::RenameTable(_) => Some(Kind::Alter),
        Statement::Grant(_)
        | Statement::GrantRole(_)
        | Statement::Revoke(_)
        | Statement::RevokeRole(_)
        | Statement::Deny(_)
        | Statement::AlterDefaultPrivileges(_) => Some(Kind::Grant),
        Statement::CreateTable(create) if create.or_replace => Some(Kind::Overwrite),
        // Every other statement by its canonical text: the many DROP x / ALTER x / CREATE OR
        // REPLACE x variants, and any the parser gains later.
        other => classify_by_text(other),
    }
}

/// The kind of a statement by the first words of its canonical rendering.
fn classify_by_text(statement: &Statement) -> Option<Kind> {
    let mut head = Head(String::new());
    // The rendering stops with an error once the head is full.
    let _ = write!(head, "{statement}");
    let head = head.0.to_ascii_uppercase();
    let starts = |p: &str| head.starts_with(p);
    if starts("DROP ") {
        Some(Kind::Drop)
    } else if starts("TRUNCATE") {
        Some(Kind::Truncate)
    } else if starts("ALTER ") || starts("RENAME ") {
        Some(Kind::Alter)
    } else if starts("GRANT ") || starts("REVOKE ") || starts("DENY ") {
        Some(Kind::Grant)
    } else if starts("CREATE OR REPLACE ") || starts("CREATE OR ALTER ") {
        Some(Kind::Replace)
    } else {
        None
    }
}

/// The first [`Head::LEN`] bytes written into it; writing past them fails, which ends a rendering.
struct Head(String);

impl Head {
    const LEN: usize = 40;
}

impl fmt::Write for Head {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.0.len() >= Head::LEN {
                return Err(fmt::Error);
            }
            self.0.push(c);
        }
        Ok(())
    }
}

/// The SQL text an EXECUTE runs, when it is a constant: the first parameter of `EXECUTE
/// IMMEDIATE` and of T-SQL's `EXEC (...)` and `EXEC sp_executesql` (`@stmt = ` allowed), folded
/// when it is a concatenation of literals. `EXECUTE name(...)` of a prepared statement passes
/// data, not SQL, and is left alone.
fn dynamic_sql(statement: &Statement) -> Option<String> {
    let Statement::Execute {
        name,
        parameters,
        immediate,
        ..
    } = statement
    else {
        return None;
    };
    let runs_sql = *immediate
        || name.as_ref().is_none_or(|name| {
            let last = name.0.last().and_then(|part| part.as_ident());
            // The generic dialect reads `EXECUTE IMMEDIATE 'x'` as a call of `IMMEDIATE`.
            last.is_some_and(|id| {
                id.value.eq_ignore_ascii_case("sp_executesql")
                    || (name.0.len() == 1 && id.value.eq_ignore_ascii_case("immediate"))
            })
        });
    if !runs_sql {
        return None;
    }
    let first = parameters.first()?;
    let first = match first {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } if matches!(&**left, Expr::Identifier(id) if id.value.eq_ignore_ascii_case("@stmt")) => {
            right
        }
        other => other,
    };
    const_string(first, 0)
}

/// A string expression folded to its text: literals joined by `||` or `+`.
fn const_string(expr: &Expr, depth: u32) -> Option<String> {
    if depth > MAX_EVAL_DEPTH {
        return None;
    }
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::StringConcat | BinaryOperator::Plus,
            right,
        } => Some(const_string(left, depth + 1)? + &const_string(right, depth + 1)?),
        other => string_literal(other).map(str::to_owned),
    }
}

/// The text of a string literal (any quoting).
fn string_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Value(v) => sql_str(&v.value),
        Expr::Nested(e) => string_literal(e),
        _ => None,
    }
}

fn sql_str(v: &SqlValue) -> Option<&str> {
    match v {
        SqlValue::SingleQuotedString(s)
        | SqlValue::DoubleQuotedString(s)
        | SqlValue::TripleSingleQuotedString(s)
        | SqlValue::TripleDoubleQuotedString(s)
        | SqlValue::EscapedStringLiteral(s)
        | SqlValue::UnicodeStringLiteral(s)
        | SqlValue::NationalStringLiteral(s)
        | SqlValue::SingleQuotedRawStringLiteral(s)
        | SqlValue::DoubleQuotedRawStringLiteral(s)
        | SqlValue::TripleSingleQuotedRawStringLiteral(s)
        | SqlValue::TripleDoubleQuotedRawStringLiteral(s) => Some(s),
        SqlValue::DollarQuotedString(s) => Some(&s.value),
        SqlValue::QuoteDelimitedStringLiteral(s)
        | SqlValue::NationalQuoteDelimitedStringLiteral(s) => Some(&s.value),
        _ => None,
    }
}

/// True when a DELETE or UPDATE with this WHERE clause touches every row: none, or one that is
/// true whatever the row (`1=1`, `true`, `'a'='a'`, `id = id`, `x OR 1=1`, `name LIKE '%'`...).
/// Constants are compared twice, strictly and as MySQL does (case-insensitive, strings as
/// numbers), and the clause counts as always true if either says so.
fn no_real_where(selection: Option<&Expr>) -> bool {
    let Some(expr) = selection else {
        return true;
    };
    [false, true]
        .into_iter()
        .any(|lenient| truth(eval(expr, lenient, 0).as_ref()) == Some(true))
}

/// A constant value of an expression.
#[derive(Clone, Debug, PartialEq)]
enum Const {
    Bool(bool),
    Num(f64),
    Str(String),
    Null,
}

/// SQL truth of a value: `None` for NULL and non-constants.
fn truth(c: Option<&Const>) -> Option<bool> {
    match c? {
        Const::Bool(b) => Some(*b),
        Const::Num(n) => Some(*n != 0.0),
        Const::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "y" | "yes" | "on" => Some(true),
            "f" | "false" | "n" | "no" | "off" => Some(false),
            other => leading_number(other).map(|n| n != 0.0),
        },
        Const::Null => None,
    }
}

/// The number a string starts with, as MySQL reads a string in a numeric context.
fn leading_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let end = s
        .char_indices()
        .take_while(|&(i, c)| c.is_ascii_digit() || c == '.' || (i == 0 && (c == '-' || c == '+')))
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0);
    (1..=end).rev().find_map(|e| s[..e].parse::<f64>().ok())
}

const MAX_EVAL_DEPTH: u32 = 64;

/// The constant value of `expr`, if it has one whatever the row.
fn eval(expr: &Expr, lenient: bool, depth: u32) -> Option<Const> {
    if depth > MAX_EVAL_DEPTH {
        return None;
    }
    let ev = |e: &Expr| eval(e, lenient, depth + 1);
    let boolean = |b: Option<bool>| Some(b.map_or(Const::Null, Const::Bool));
    match expr {
        Expr::Value(v) => match &v.value {
            SqlValue::Boolean(b) => Some(Const::Bool(*b)),
            SqlValue::Number(n, _) => n.parse().ok().map(Const::Num),
            SqlValue::Null => Some(Const::Null),
            other => sql_str(other).map(|s| Const::Str(s.to_owned())),
        },
        Expr::Nested(e) => ev(e),
        Expr::Cast { expr, .. } => ev(expr),
        Expr::UnaryOp { op, expr } => {
            let v = ev(expr)?;
            match op {
                UnaryOperator::Not | UnaryOperator::BangNot => boolean(truth(Some(&v)).map(|b| !b)),
                UnaryOperator::Minus => number(&v, lenient).map(|n| Const::Num(-n)),
                UnaryOperator::Plus => number(&v, lenient).map(Const::Num),
                _ => None,
            }
        }
        Expr::BinaryOp { left, op, right } => binary(left, op, right, lenient, depth),
        Expr::IsNull(e) => Some(Const::Bool(ev(e)? == Const::Null)),
        Expr::IsNotNull(e) => Some(Const::Bool(ev(e)? != Const::Null)),
        Expr::IsTrue(e) => Some(Const::Bool(truth(Some(&ev(e)?)) == Some(true))),
        Expr::IsNotTrue(e) => Some(Const::Bool(truth(Some(&ev(e)?)) != Some(true))),
        Expr::IsFalse(e) => Some(Const::Bool(truth(Some(&ev(e)?)) == Some(false))),
        Expr::IsNotFalse(e) => Some(Const::Bool(truth(Some(&ev(e)?)) != Some(false))),
        Expr::IsNotDistinctFrom(a, b) if a == b => Some(Const::Bool(true)),
        Expr::IsDistinctFrom(a, b) if a == b => Some(Const::Bool(false)),
        Expr::IsNotDistinctFrom(a, b) => Some(Const::Bool(ev(a)? == ev(b)?)),
        Expr::IsDistinctFrom(a, b) => Some(Const::Bool(ev(a)? != ev(b)?)),
        Expr::In {
            expr,
            target: InTarget::List(list),
            negated,
            ..
        } => {
            // `x IN (..., x, ...)`, or a constant among constants.
            let hit = if list.iter().any(|item| item == &**expr) {
                true
            } else {
                let v = ev(expr)?;
                let mut hit = false;
                for item in list {
                    hit |= compare(&v, &ev(item)?, lenient) == Some(Ordering::Equal);
                }
                hit
            };
            Some(Const::Bool(hit != *negated))
        }
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let (v, lo, hi) = (ev(expr)?, ev(low)?, ev(high)?);
            let inside = compare(&v, &lo, lenient)? != Ordering::Less
                && compare(&v, &hi, lenient)? != Ordering::Greater;
            Some(Const::Bool(inside != *negated))
        }
        // `name LIKE '%'` holds for every non-NULL name.
        Expr::Like {
            negated: false,
            pattern,
            escape_char: None,
            ..
        }
        | Expr::ILike {
            negated: false,
            pattern,
            escape_char: None,
            ..
        } => match ev(pattern)? {
            Const::Str(p) if !p.is_empty() && p.chars().all(|c| c == '%') => {
                Some(Const::Bool(true))
            }
            _ => None,
        },
        // `EXISTS (SELECT 1)`: a subquery with no FROM, WHERE, HAVING or LIMIT has a row.
        Expr::Exists { subquery, negated } => {
            let SetExpr::Select(select) = &*subquery.body else {
                return None;
            };
            (select.from.is_empty()
                && select.selection.is_none()
                && select.having.is_none()
                && subquery.limit_clause.is_none()
                && subquery.fetch.is_none())
            .then_some(Const::Bool(!*negated))
        }
        _ => None,
    }
}

fn binary(
    left: &Expr,
    op: &BinaryOperator,
    right: &Expr,
    lenient: bool,
    depth: u32,
) -> Option<Const> {
    let ev = |e: &Expr| eval(e, lenient, depth + 1);
    let boolean = |b: Option<bool>| Some(b.map_or(Const::Null, Const::Bool));
    match op {
        BinaryOperator::And => {
            let (l, r) = (truth(ev(left).as_ref()), truth(ev(right).as_ref()));
            match (l, r) {
                (Some(false), _) | (_, Some(false)) => Some(Const::Bool(false)),
                (Some(true), Some(true)) => Some(Const::Bool(true)),
                _ => None,
            }
        }
        BinaryOperator::Or => {
            let (l, r) = (truth(ev(left).as_ref()), truth(ev(right).as_ref()));
            match (l, r) {
                (Some(true), _) | (_, Some(true)) => Some(Const::Bool(true)),
                (Some(false), Some(false)) => Some(Const::Bool(false)),
                _ => None,
            }
        }
        BinaryOperator::Xor => {
            let (l, r) = (truth(ev(left).as_ref())?, truth(ev(right).as_ref())?);
            Some(Const::Bool(l != r))
        }
        BinaryOperator::Eq
        | BinaryOperator::NotEq
        | BinaryOperator::Lt
        | BinaryOperator::LtEq
        | BinaryOperator::Gt
        | BinaryOperator::GtEq
        | BinaryOperator::Spaceship => {
            // The same expression on both sides (`id = id`): true for every row where it is not NULL.
            let order = if left == right && !matches!(left, Expr::Value(_)) {
                Some(Ordering::Equal)
            } else {
                let (l, r) = (ev(left)?, ev(right)?);
                if *op == BinaryOperator::Spaceship && (l == Const::Null || r == Const::Null) {
                    return Some(Const::Bool(l == r));
                }
                if l == Const::Null || r == Const::Null {
                    return Some(Const::Null);
                }
                compare(&l, &r, lenient)
            };
            let Some(order) = order else {
                return boolean(None);
            };
            Some(Const::Bool(match op {
                BinaryOperator::Eq | BinaryOperator::Spaceship => order == Ordering::Equal,
                BinaryOperator::NotEq => order != Ordering::Equal,
                BinaryOperator::Lt => order == Ordering::Less,
                BinaryOperator::LtEq => order != Ordering::Greater,
                BinaryOperator::Gt => order == Ordering::Greater,
                _ => order != Ordering::Less,
            }))
        }
        BinaryOperator::Plus
        | BinaryOperator::Minus
        | BinaryOperator::Multiply
        | BinaryOperator::Divide
        | BinaryOperator::Modulo => {
            let (l, r) = (number(&ev(left)?, lenient)?, number(&ev(right)?, lenient)?);
            let n = match op {
                BinaryOperator::Plus => l + r,
                BinaryOperator::Minus => l - r,
                BinaryOperator::Multiply => l * r,
                BinaryOperator::Divide if r != 0.0 => l / r,
                BinaryOperator::Modulo if r != 0.0 => l % r,
                _ => return Some(Const::Null),
            };
            Some(Const::Num(n))
        }
        BinaryOperator::StringConcat => match (ev(left)?, ev(right)?) {
            (Const::Str(a), Const::Str(b)) => Some(Const::Str(a + &b)),
            _ => None,
        },
        _ => None,
    }
}

/// A constant as a number: numbers and booleans; strings only when lenient (MySQL) or numeric.
fn number(c: &Const, lenient: bool) -> Option<f64> {
    match c {
        Const::Num(n) => Some(*n),
        Const::Bool(b) => Some(f64::from(u8::from(*b))),
        Const::Str(s) if lenient => Some(leading_number(s).unwrap_or(0.0)),
        Const::Str(s) => s.trim().parse().ok(),
        Const::Null => None,
    }
}

fn compare(a: &Const, b: &Const, lenient: bool) -> Option<Ordering> {
    match (a, b) {
        (Const::Str(x), Const::Str(y)) if lenient => {
            Some(x.to_lowercase().trim_end().cmp(y.to_lowercase().trim_end()))
        }
        (Const::Str(x), Const::Str(y)) => Some(x.cmp(y)),
        (Const::Bool(x), Const::Bool(y)) => Some(x.cmp(y)),
        (Const::Null, _) | (_, Const::Null) => None,
        _ => number(a, lenient)?.partial_cmp(&number(b, lenient)?),
    }
}

// ---------------------------------------------------------------------------------------------
// Text that does not parse: look for statements that start with a destructive keyword.
// ---------------------------------------------------------------------------------------------

/// How to read quotes and comments. Dialects disagree (MySQL's `\'` escape and `#` comments,
/// PostgreSQL's nested comments and `$$` strings, T-SQL's `[names]`), and reading one dialect's
/// text by another's rules may hide a statement inside what looks like a string; so the text is
/// read under every combination of the rules it has characters for, and a keyword found under
/// any of them counts.
#[derive(Clone, Copy, Debug, Default)]
struct Lexing {
    backslash_escapes: bool,
    nested_comments: bool,
    dash_comment_needs_space: bool,
    hash_comments: bool,
    dollar_strings: bool,
    bracket_names: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    /// A quoted string or name.
    Quoted,
    Semicolon,
    Open,
    Punct(char),
}

fn tokenize(sql: &str, lx: Lexing) -> Vec<Tok<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let line_end = |from: usize| {
        b[from..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |p| from + p)
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            b'-' if next == Some(b'-')
                && (!lx.dash_comment_needs_space
                    || b.get(i + 2)
                        .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control())) =>
            {
                i = line_end(i);
            }
            b'#' if lx.hash_comments => i = line_end(i),
            b'/' if next == Some(b'*') => {
                let mut depth = 1;
                i += 2;
                while i < b.len() && depth > 0 {
                    if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                    } else if lx.nested_comments && b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' | b'"' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if lx.backslash_escapes && b[i] == b'\\' {
                        2
                    } else {
                        1
                    };
                }
                i += 1;
                out.push(Tok::Quoted);
            }
            b'[' if lx.bracket_names => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b']')
                    .map_or(b.len(), |p| i + p + 1);
                out.push(Tok::Quoted);
            }
            b'$' if lx.dollar_strings && dollar_tag(&b[i..]).is_some() => {
                let tag = dollar_tag(&b[i..]).unwrap_or(1);
                let (open, body) = (&b[i..i + tag], i + tag);
                i = b[body..]
                    .windows(tag)
                    .position(|w| w == open)
                    .map_or(b.len(), |p| body + p + tag);
                out.push(Tok::Quoted);
            }
            b';' => {
                out.push(Tok::Semicolon);
                i += 1;
            }
            b'(' => {
                out.push(Tok::Open);
                i += 1;
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or(' ');
                if is_word_char(ch) {
                    let end = sql[i..]
                        .char_indices()
                        .find(|&(_, c)| !is_word_char(c))
                        .map_or(sql.len(), |(p, _)| i + p);
                    out.push(Tok::Word(&sql[i..end]));
                    i = end;
                } else {
                    // Unicode spaces and invisible marks (BOM, zero-width) separate, as whitespace.
                    if !ch.is_whitespace()
                        && !matches!(ch, '\u{feff}' | '\u{200b}'..='\u{200d}' | '\u{2060}')
                    {
                        out.push(Tok::Punct(ch));
                    }
                    i += ch.len_utf8();
                }
            }
        }
        // A skip may land inside a character (an escape before a multi-byte one); realign.
        while i < b.len() && !sql.is_char_boundary(i) {
            i += 1;
        }
    }
    out
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Length of a PostgreSQL dollar-quote opener (`$$`, `$tag$`) at the start of `b`.
fn dollar_tag(b: &[u8]) -> Option<usize> {
    let close = b[1..].iter().position(|&c| c == b'$')? + 1;
    let tag = &b[1..close];
    let ok = tag.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
        && tag.first().is_none_or(|c| !c.is_ascii_digit());
    ok.then_some(close + 1)
}

/// Words after which a new statement may start, besides `;` and `(`: procedural bodies.
const STATEMENT_OPENERS: &[&str] = &["BEGIN", "THEN", "ELSE", "DO", "AS", "LOOP"];

/// What may follow DROP or ALTER in a real statement.
const OBJECTS: &[&str] = &[
    "TABLE",
    "TABLES",
    "VIEW",
    "INDEX",
    "DATABASE",
    "SCHEMA",
    "USER",
    "ROLE",
    "FUNCTION",
    "PROCEDURE",
    "PROC",
    "TRIGGER",
    "SEQUENCE",
    "TYPE",
    "DOMAIN",
    "EXTENSION",
    "COLUMN",
    "CONSTRAINT",
    "MATERIALIZED",
    "TEMPORARY",
    "TEMP",
    "IF",
    "EXTERNAL",
    "FOREIGN",
    "SERVER",
    "POLICY",
    "RULE",
    "OWNED",
    "TABLESPACE",
    "STAGE",
    "WAREHOUSE",
    "STREAM",
    "TASK",
    "PIPE",
    "SECRET",
    "CONNECTOR",
    "OPERATOR",
    "AGGREGATE",
    "COLLATION",
    "CONVERSION",
    "EVENT",
    "PUBLICATION",
    "SUBSCRIPTION",
    "STATISTICS",
    "TEXT",
    "TRANSFORM",
    "ACCESS",
    "CAST",
    "LANGUAGE",
    "ROUTINE",
    "GROUP",
    "LOGIN",
    "PACKAGE",
    "SYNONYM",
    "PARTITION",
    "FILE",
    "SHARE",
    "INTEGRATION",
    "NETWORK",
    "CATALOG",
    "DICTIONARY",
    "MACRO",
    "SESSION",
    "SYSTEM",
    "DEFAULT",
    "LARGE",
    "RESOURCE",
    "FULLTEXT",
    "SPATIAL",
    "UNIQUE",
    "KEYSPACE",
    "TRANSIENT",
    "VOLATILE",
    "GLOBAL",
    "LOCAL",
    "UNLOGGED",
    "DYNAMIC",
    "ICEBERG",
    "HYBRID",
    "SNAPSHOT",
    "STORAGE",
    "MODEL",
    "SEARCH",
    "REPLICATION",
    "ASSEMBLY",
    "CERTIFICATE",
    "CREDENTIAL",
    "ENDPOINT",
    "QUEUE",
    "SERVICE",
    "CONTRACT",
    "ROUTE",
    "ACCOUNT",
    "ALIAS",
    "NAMED",
    "PROFILE",
    "SOURCE",
    "SINK",
    "INSTANCE",
    "AUDIT",
    "JOB",
    "COMPUTE",
    "PRIMARY",
    "KEY",
];

/// TRUNCATE words that may follow the table name.
const TRUNCATE_TAILS: &[&str] = &[
    "CASCADE",
    "RESTRICT",
    "RESTART",
    "CONTINUE",
    "PARTITION",
    "IMMEDIATE",
    "DROP",
    "REUSE",
    "WITH",
    "ON",
];

/// The destructive statement a keyword starts, given the rest of its statement and whether a word
/// comes later in it (`later` answers in constant time: see [`keyword_in_tokens`]).
fn keyword_rule(
    word: &str,
    rest: &[Tok<'_>],
    later: &dyn Fn(&str) -> bool,
) -> Option<(Kind, &'static str)> {
    let is =
        |t: Option<&Tok<'_>>, w: &str| matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w));
    let is_any = |t: Option<&Tok<'_>>, ws: &[&str]| ws.iter().any(|w| is(t, w));
    let has = later;
    let upper = word.to_ascii_uppercase();
    match upper.as_str() {
        "DROP" if is_any(rest.first(), OBJECTS) => Some((Kind::Drop, "DROP")),
        "ALTER" if is_any(rest.first(), OBJECTS) => Some((Kind::Alter, "ALTER")),
        "RENAME" if is_any(rest.first(), &["TABLE", "USER", "DATABASE", "SCHEMA"]) => {
            Some((Kind::Alter, "RENAME"))
        }
        "TRUNCATE" => {
            let name = matches!(rest.first(), Some(Tok::Word(_) | Tok::Quoted));
            let after = rest.get(1);
            let tail = after.is_none()
                || matches!(after, Some(Tok::Punct('.' | ',' | '*')))
                || is_any(after, TRUNCATE_TAILS);
            (is_any(rest.first(), &["TABLE", "ONLY"]) || (name && tail))
                .then_some((Kind::Truncate, "TRUNCATE"))
        }
        "DELETE" if has("FROM") || is(rest.get(1), "WHERE") => {
            Some((Kind::DeleteWithoutWhere, "DELETE"))
        }
        "UPDATE" if has("SET") => Some((Kind::UpdateWithoutWhere, "UPDATE")),
        "GRANT" if has("TO") => Some((Kind::Grant, "GRANT")),
        "REVOKE" if has("FROM") => Some((Kind::Grant, "REVOKE")),
        "DENY" if has("ON") && has("TO") => Some((Kind::Grant, "DENY")),
        "INSERT" if is(rest.first(), "OVERWRITE") => Some((Kind::Overwrite, "INSERT OVERWRITE")),
        "REPLACE" if is(rest.first(), "INTO") => Some((Kind::Replace, "REPLACE INTO")),
        "CREATE" if is(rest.first(), "OR") && is_any(rest.get(1), &["REPLACE", "ALTER"]) => {
            let table = rest.iter().skip(2).take(4).any(|t| is(Some(t), "TABLE"));
            Some(if table {
                (Kind::Overwrite, "CREATE OR REPLACE TABLE")
            } else {
                (Kind::Replace, "CREATE OR REPLACE")
            })
        }
        _ => None,
    }
}

/// Turns one lexing rule on.
type LexRule = fn(&mut Lexing);

/// Scans `sql` under every lexing its characters make relevant: the first refused destructive
/// keyword that starts a statement under any of them, and (with `count`) the fewest statements
/// any of them sees (a misread quote must not split one statement in two).
fn lexical(
    sql: &str,
    settings: &GuardSettings,
    count: bool,
) -> (Option<(Kind, &'static str)>, usize) {
    let b = sql.as_bytes();
    let flags: [(bool, LexRule); 6] = [
        (sql.contains('\\'), |l| l.backslash_escapes = true),
        // Nesting matters only with a second opener.
        (sql.matches("/*").nth(1).is_some(), |l| {
            l.nested_comments = true
        }),
        (
            b.windows(3).any(|w| {
                w[..2] == *b"--" && !w[2].is_ascii_whitespace() && !w[2].is_ascii_control()
            }),
            |l| l.dash_comment_needs_space = true,
        ),
        (sql.contains('#'), |l| l.hash_comments = true),
        (
            (0..b.len()).any(|i| b[i] == b'$' && dollar_tag(&b[i..]).is_some()),
            |l| l.dollar_strings = true,
        ),
        (sql.contains('['), |l| l.bracket_names = true),
    ];
    let live: Vec<LexRule> = flags.iter().filter(|f| f.0).map(|f| f.1).collect();
    // Text with no word a rule starts with holds no destructive statement under any lexing.
    let mut keyword = None;
    let mut search = has_rule_word(sql);
    let mut statements = usize::MAX;
    for combo in 0u32..1 << live.len() {
        if !search && !count {
            break;
        }
        let mut lx = Lexing::default();
        for (bit, set) in live.iter().enumerate() {
            if combo & (1 << bit) != 0 {
                set(&mut lx);
            }
        }
        let toks = tokenize(sql, lx);
        if search {
            keyword = keyword_in_tokens(&toks, settings);
            search = keyword.is_none();
        }
        if count {
            statements = statements.min(count_statements(&toks));
        }
    }
    (keyword, if count { statements } else { 0 })
}

/// The words [`keyword_rule`] acts on.
const RULE_WORDS: &[&str] = &[
    "DROP", "ALTER", "RENAME", "TRUNCATE", "DELETE", "UPDATE", "GRANT", "REVOKE", "DENY", "INSERT",
    "REPLACE", "CREATE",
];

/// True when one of [`RULE_WORDS`] is a word of `sql` (in any case).
fn has_rule_word(sql: &str) -> bool {
    sql.split(|c: char| !is_word_char(c))
        .any(|w| RULE_WORDS.iter().any(|r| w.eq_ignore_ascii_case(r)))
}

/// Statements: runs of tokens between semicolons.
fn count_statements(toks: &[Tok<'_>]) -> usize {
    toks.split(|t| *t == Tok::Semicolon)
        .filter(|run| !run.is_empty())
        .count()
}

/// The words the rules look for later in a statement.
const LATER_WORDS: [&str; 4] = ["FROM", "SET", "TO", "ON"];

/// Linear in the tokens: each statement's last FROM, SET, TO and ON are found once, so a rule's
/// "later in the statement" test is a comparison (text of many `(` starts stays cheap).
fn keyword_in_tokens(toks: &[Tok<'_>], settings: &GuardSettings) -> Option<(Kind, &'static str)> {
    let mut from = 0;
    for statement in toks.split(|t| *t == Tok::Semicolon) {
        let base = from;
        from += statement.len() + 1;
        let mut last = [None; LATER_WORDS.len()];
        for (i, tok) in statement.iter().enumerate() {
            if let Tok::Word(w) = tok
                && let Some(k) = LATER_WORDS.iter().position(|l| w.eq_ignore_ascii_case(l))
            {
                last[k] = Some(i);
            }
        }
        for (i, tok) in statement.iter().enumerate() {
            let Tok::Word(word) = tok else {
                continue;
            };
            if !RULE_WORDS.iter().any(|r| word.eq_ignore_ascii_case(r)) {
                continue;
            }
            let starts = match (base + i).checked_sub(1).map(|p| toks[p]) {
                None | Some(Tok::Semicolon | Tok::Open) => true,
                Some(Tok::Word(prev)) => STATEMENT_OPENERS
                    .iter()
                    .any(|o| prev.eq_ignore_ascii_case(o)),
                Some(_) => false,
            };
            if !starts {
                continue;
            }
            let later = |w: &str| {
                LATER_WORDS
                    .iter()
                    .position(|l| w.eq_ignore_ascii_case(l))
                    .and_then(|k| last[k])
                    .is_some_and(|at| at > i)
            };
            if let Some(found) = keyword_rule(word, &statement[i + 1..], &later)
                && settings.denies(found.0)
            {
                return Some(found);
            }
        }
    }
    None
}

policy_sdk::export_policy!(SqlGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use policy_sdk::parse_settings;
    use serde_json::json;

    fn call(args: Value) -> ToolCall {
        ToolCall::new("db", "query")
            .with_member("alice")
            .with_arguments(args)
    }

    fn raw_call(raw: &str) -> ToolCall {
        // Raw JSON text, escapes as a client wrote them (`with_arguments` would re-serialize).
        let mut call = ToolCall::new("db", "query").with_member("alice");
        call.arguments = Some(raw.to_owned());
        call
    }

    fn settings(json: &str) -> GuardSettings {
        parse_settings(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn decide(sql: &str, s: &GuardSettings) -> Decision {
        SqlGuard::call(&call(json!({ "sql": sql })), s)
    }

    /// Asserts a denial with `code` whose reason names `finding` and `path`, and not the SQL.
    #[track_caller]
    fn assert_denied(d: &Decision, code: &str, finding: &str, path: &str, sql: &str) {
        match d {
            Decision::Deny { code: c, reason } => {
                assert_eq!(c, code, "{sql}: {reason}");
                assert!(
                    reason.contains(&format!("finding {finding}")),
                    "{sql}: {reason} should name {finding}"
                );
                assert!(
                    reason.starts_with(path),
                    "{sql}: {reason} should name {path}"
                );
                assert!(
                    !reason.contains("secret_tbl"),
                    "{sql}: reason echoes the SQL: {reason}"
                );
            }
            other => panic!("{sql}: expected {code}/{finding}, got {other:?}"),
        }
    }

    /// (dialect, SQL, code, finding): each must be refused exactly so under default settings.
    const ATTACKS: &[(&str, &str, &str, &str)] = &[
        (
            "generic",
            "DROP TABLE secret_tbl",
            "destructive-sql",
            "drop",
        ),
        (
            "generic",
            "drop table if exists secret_tbl cascade",
            "destructive-sql",
            "drop",
        ),
        (
            "generic",
            "/* x */ DROP TABLE secret_tbl",
            "destructive-sql",
            "drop",
        ),
        (
            "generic",
            "-- x\nDROP TABLE secret_tbl",
            "destructive-sql",
            "drop",
        ),
        (
            "generic",
            "  \n\t DrOp\n  TaBlE   secret_tbl  ;  ",
            "destructive-sql",
            "drop",
        ),
        (
            "generic",
            "DROP TABLE secret_tbl -- bye",
            "destructive-sql",
            "drop",
        ),
        (
            "generic",
            "DROP DATABASE secret_tbl",
            "destructive-sql",
            "drop",
        ),
        (
            "generic",
            "DROP SCHEMA secret_tbl CASCADE",
            "destructive-sql",
            "drop",
        ),
        ("generic", "DROP VIEW secret_tbl", "destructive-sql", "drop"),
        (
            "generic",
            "DROP INDEX secret_tbl",
            "destructive-sql",
            "drop",
        ),
        (
            "generic",
            "DROP FUNCTION secret_tbl",
            "destructive-sql",
            "drop",
        ),
        (
            "postgresql",
            "DROP EXTENSION secret_tbl",
            "destructive-sql",
            "drop",
        ),
        (
            "postgresql",
            "DROP TRIGGER t ON secret_tbl",
            "destructive-sql",
            "drop",
        ),
        (
            "generic",
            "TRUNCATE TABLE secret_tbl",
            "destructive-sql",
            "truncate",
        ),
        (
            "generic",
            "truncate secret_tbl",
            "destructive-sql",
            "truncate",
        ),
        (
            "generic",
            "ALTER TABLE secret_tbl DROP COLUMN email",
            "destructive-sql",
            "alter",
        ),
        (
            "generic",
            "ALTER TABLE secret_tbl RENAME TO old",
            "destructive-sql",
            "alter",
        ),
        (
            "postgresql",
            "ALTER USER bob WITH SUPERUSER",
            "destructive-sql",
            "alter",
        ),
        (
            "mysql",
            "RENAME TABLE secret_tbl TO old",
            "destructive-sql",
            "alter",
        ),
        (
            "generic",
            "GRANT ALL PRIVILEGES ON secret_tbl TO public",
            "destructive-sql",
            "grant",
        ),
        (
            "generic",
            "GRANT SELECT ON secret_tbl TO bob",
            "destructive-sql",
            "grant",
        ),
        (
            "generic",
            "REVOKE SELECT ON secret_tbl FROM bob",
            "destructive-sql",
            "grant",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "delete from secret_tbl;",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE 1=1",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE true",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE 'a'='a'",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE (1) = (1)",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE id = id",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE 1",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE id = 3 OR 1=1",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE NOT false",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE 2 > 1",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE 1 + 1 = 2",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE name LIKE '%'",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE 1 IN (1, 2)",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE 5 BETWEEN 1 AND 9",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE EXISTS (SELECT 1)",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "DELETE FROM secret_tbl WHERE NULL IS NULL",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "mysql",
            "DELETE FROM secret_tbl WHERE 'A' = 'a'",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "mysql",
            "DELETE FROM secret_tbl WHERE '1' = 1",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "UPDATE secret_tbl SET admin = true",
            "destructive-sql",
            "update-without-where",
        ),
        (
            "generic",
            "update secret_tbl set admin = true where 1 = 1",
            "destructive-sql",
            "update-without-where",
        ),
        (
            "generic",
            "UPDATE secret_tbl SET a = 1 WHERE TRUE OR a = 2",
            "destructive-sql",
            "update-without-where",
        ),
        (
            "generic",
            "SELECT 1; DROP TABLE secret_tbl",
            "destructive-sql",
            "drop",
        ),
        (
            "generic",
            "SELECT 1;\nDELETE FROM secret_tbl",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "SELECT 1; SELECT 2",
            "multiple-statements",
            "multiple-statements",
        ),
        (
            "generic",
            "SELECT ';'; SELECT 2",
            "multiple-statements",
            "multiple-statements",
        ),
        (
            "postgresql",
            "WITH x AS (DELETE FROM secret_tbl RETURNING *) SELECT * FROM x",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "postgresql",
            "WITH x AS (UPDATE secret_tbl SET a = 1 RETURNING *) SELECT * FROM x",
            "destructive-sql",
            "update-without-where",
        ),
        (
            "postgresql",
            "EXPLAIN ANALYZE DELETE FROM secret_tbl",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "postgresql",
            "PREPARE p AS DELETE FROM secret_tbl",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "hive",
            "INSERT OVERWRITE TABLE secret_tbl SELECT * FROM s",
            "destructive-sql",
            "overwrite",
        ),
        (
            "snowflake",
            "CREATE OR REPLACE TABLE secret_tbl AS SELECT 1",
            "destructive-sql",
            "overwrite",
        ),
        (
            "snowflake",
            "EXECUTE IMMEDIATE 'DROP TABLE secret_tbl'",
            "destructive-sql",
            "drop",
        ),
        (
            "mssql",
            "EXEC ('DROP ' + 'TABLE secret_tbl')",
            "destructive-sql",
            "drop",
        ),
        (
            "mssql",
            "EXECUTE sys.sp_executesql @stmt = N'TRUNCATE TABLE secret_tbl'",
            "destructive-sql",
            "truncate",
        ),
        (
            "generic",
            "EXECUTE IMMEDIATE 'UPDATE secret_tbl SET a = 1 WHERE 1 = 1'",
            "destructive-sql",
            "update-without-where",
        ),
        (
            "bigquery",
            "EXECUTE IMMEDIATE 'DROP TABLE ' || 'secret_tbl'",
            "destructive-sql",
            "drop",
        ),
        (
            "mssql",
            "EXEC sp_executesql N'DELETE FROM secret_tbl'",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "mysql",
            "SELECT 1 /*!50000 ; DROP TABLE secret_tbl */",
            "destructive-sql",
            "drop",
        ),
        // A trigger body runs on every insert: its statements are walked too.
        (
            "sqlite",
            "CREATE TRIGGER tr AFTER INSERT ON a BEGIN DELETE FROM secret_tbl; END",
            "destructive-sql",
            "delete-without-where",
        ),
        (
            "mysql",
            "DELETE secret_tbl FROM secret_tbl JOIN b ON secret_tbl.id = b.id",
            "destructive-sql",
            "delete-without-where",
        ),
        // Not parseable, but a statement in it starts with a destructive keyword: fail closed.
        (
            "generic",
            "DROP TABLE secret_tbl PLEASE NOW",
            "unparseable-sql",
            "drop",
        ),
        (
            "generic",
            "SELECT FROM WHERE; drop table secret_tbl",
            "unparseable-sql",
            "drop",
        ),
        (
            "generic",
            "SELECT ))) ; /* hi */ TRUNCATE secret_tbl",
            "unparseable-sql",
            "truncate",
        ),
        (
            "postgresql",
            "DO $$ BEGIN DROP TABLE secret_tbl; END $$",
            "unparseable-sql",
            "drop",
        ),
        (
            "generic",
            "SELECT 'it\\'s' FROM t WHERE; DELETE FROM secret_tbl --'",
            "unparseable-sql",
            "delete-without-where",
        ),
        (
            "generic",
            "SELECT 1 @@@ 2; UPDATE secret_tbl SET a = 1 WHERE id = 1",
            "unparseable-sql",
            "update-without-where",
        ),
    ];

    #[test]
    fn attacks_are_denied() {
        for (dialect, sql, code, finding) in ATTACKS {
            let s = settings(&json!({ "dialect": dialect }).to_string());
            assert_denied(&decide(sql, &s), code, finding, "arguments.sql", sql);
        }
        assert!(ATTACKS.len() >= 20);
    }

    /// (dialect, SQL): each must be abstained on under default settings.
    const BENIGN: &[(&str, &str)] = &[
        ("generic", "SELECT * FROM dropped_items"),
        ("generic", "SELECT 'DROP TABLE x'"),
        ("generic", "DELETE FROM t WHERE id = 3"),
        ("generic", "UPDATE t SET a=1 WHERE id=2"),
        ("generic", "SELECT * FROM t -- DROP TABLE t"),
        ("generic", "/* DROP TABLE t */ SELECT 1"),
        ("generic", "SELECT 1; "),
        ("generic", "SELECT 1;\n-- DROP TABLE t;\n"),
        ("generic", "SELECT truncate FROM t"),
        ("generic", "SELECT \"truncate\", \"drop\" FROM t"),
        ("generic", "SELECT drop_date, alter_ego, grant_id FROM t"),
        ("generic", "SELECT 'a;b', 'c; DROP TABLE x' FROM t"),
        (
            "generic",
            "SELECT * FROM users WHERE name = 'O''Brien; DROP TABLE x'",
        ),
        ("generic", "INSERT INTO t (a) VALUES ('DELETE FROM t')"),
        (
            "generic",
            "UPDATE t SET note = 'DELETE FROM t' WHERE id = 1",
        ),
        ("generic", "CREATE TABLE t (id INT)"),
        ("generic", "CREATE OR REPLACE VIEW v AS SELECT 1"),
        ("generic", "DELETE FROM t WHERE id = 3 AND 1=1"),
        ("generic", "DELETE FROM t WHERE id IN (SELECT id FROM s)"),
        ("generic", "DELETE FROM t WHERE 1 = 0 OR id = 4"),
        ("generic", "DELETE FROM t WHERE id = id + 1"),
        ("generic", "DELETE FROM t WHERE name LIKE 'a%'"),
        ("generic", "DELETE FROM t WHERE 'a' = 'b'"),
        ("mysql", "DELETE FROM t WHERE 1 = 0"),
        (
            "postgresql",
            "DELETE FROM t WHERE created_at < now() - interval '30 days'",
        ),
        ("generic", "SELECT * FROM t WHERE 1=1"),
        ("generic", "WITH x AS (SELECT 1) SELECT * FROM x"),
        ("generic", "EXPLAIN SELECT * FROM t"),
        ("generic", ""),
        ("generic", "   -- just a comment"),
        // Prose in a search tool's `query`: not SQL, no destructive statement shape.
        ("generic", "how to drop shipping suppliers"),
        ("generic", "drop shipping suppliers near me"),
        ("generic", "update me on the latest news"),
        ("generic", "truncate string in python"),
        ("generic", "delete my old emails please"),
        ("generic", "drop me a line about the alter ego"),
        ("generic", "grant writing tips"),
        ("generic", "what does ALTER TABLE do?"),
        // EXECUTE of a prepared statement or a procedure passes data, not SQL.
        ("postgresql", "EXECUTE insert_note('drop table talk')"),
        ("mssql", "EXEC send_note 'DROP TABLE x'"),
        ("snowflake", "EXECUTE IMMEDIATE 'SELECT 1'"),
    ];

    #[test]
    fn near_misses_are_not_denied() {
        for (dialect, sql) in BENIGN {
            let s = settings(&json!({ "dialect": dialect }).to_string());
            assert_eq!(decide(sql, &s), Decision::abstain(), "{dialect}: {sql}");
            let q = SqlGuard::call(&call(json!({ "query": sql })), &s);
            assert_eq!(q, Decision::abstain(), "{dialect}: query {sql}");
        }
        assert!(BENIGN.len() >= 20);
    }

    /// Prose that happens to be valid SQL is SQL: `DELETE my account` deletes from table `my`
    /// (alias `account`) in T-SQL, Oracle and BigQuery, `TRUNCATE text` empties table `text`. A
    /// search tool with a `query` argument is kept out by `tools`, not by guessing.
    #[test]
    fn prose_that_parses_is_sql() {
        let s = GuardSettings::default();
        assert!(decide("delete my account", &s).is_deny());
        assert!(decide("truncate text", &s).is_deny());
        let scoped = settings(r#"{"tools": ["db:*", "warehouse:run_sql"]}"#);
        let search =
            ToolCall::new("web", "search").with_arguments(json!({"query": "delete my account"}));
        assert_eq!(SqlGuard::call(&search, &scoped), Decision::abstain());
    }

    #[test]
    fn json_escapes_are_read_as_the_tool_reads_them() {
        let s = GuardSettings::default();
        for raw in [
            r#"{"sql":"\u0044ROP TABLE secret_tbl"}"#,
            r#"{"\u0073ql":"DROP TABLE secret_tbl"}"#,
            r#"{"sql":"SELECT 1;\nDROP\tTABLE secret_tbl"}"#,
            r#"{"sql":"\u0064\u0072\u006f\u0070 table secret_tbl"}"#,
        ] {
            assert_denied(
                &SqlGuard::call(&raw_call(raw), &s),
                "destructive-sql",
                "drop",
                "arguments.sql",
                raw,
            );
        }
        for raw in [
            r#"{"sql":"SELECT \u0027DROP TABLE x\u0027"}"#,
            r#"{"sql":"SELECT 1 \/* DROP TABLE x *\/"}"#,
            r#"{"text":"\u0044ROP TABLE x"}"#,
        ] {
            assert_eq!(
                SqlGuard::call(&raw_call(raw), &s),
                Decision::abstain(),
                "{raw}"
            );
        }
    }

    #[test]
    fn reads_the_configured_arguments_only() {
        let s = GuardSettings::default();
        for args in [
            json!({"path": "/tmp/x", "text": "DROP TABLE t"}),
            json!({"sql": 42, "query": null, "statement": {"a": 1}}),
            json!({}),
            json!(["DROP TABLE t"]),
        ] {
            assert_eq!(
                SqlGuard::call(&call(args.clone()), &s),
                Decision::abstain(),
                "{args}"
            );
        }
        for (key, path) in [
            ("query", "arguments.query"),
            ("statement", "arguments.statement"),
        ] {
            let d = SqlGuard::call(&call(json!({ key: "DROP TABLE secret_tbl" })), &s);
            assert_denied(&d, "destructive-sql", "drop", path, key);
        }
        // A list of statements: each is checked, and the reason says which.
        let d = SqlGuard::call(
            &call(json!({"sql": ["SELECT 1", "TRUNCATE secret_tbl"]})),
            &s,
        );
        assert_denied(
            &d,
            "destructive-sql",
            "truncate",
            "arguments.sql[1]",
            "list",
        );

        let nested = settings(r#"{"arguments": ["params.sql", "a.b"]}"#);
        let d = SqlGuard::call(
            &call(json!({"params": {"sql": "DROP TABLE secret_tbl"}})),
            &nested,
        );
        assert_denied(
            &d,
            "destructive-sql",
            "drop",
            "arguments.params.sql",
            "nested",
        );
        let d = SqlGuard::call(&call(json!({"a.b": "DROP TABLE secret_tbl"})), &nested);
        assert_denied(&d, "destructive-sql", "drop", "arguments.a.b", "dotted key");
        assert_eq!(
            SqlGuard::call(&call(json!({"sql": "DROP TABLE t"})), &nested),
            Decision::abstain()
        );
    }

    #[test]
    fn applies_only_to_configured_tools_and_never_to_listing() {
        let s = settings(r#"{"tools": ["db:*"]}"#);
        let fs = ToolCall::new("fs", "query").with_arguments(json!({"sql": "DROP TABLE t"}));
        assert_eq!(SqlGuard::call(&fs, &s), Decision::abstain());
        assert!(SqlGuard::call(&call(json!({"sql": "DROP TABLE t"})), &s).is_deny());
        let listing = ToolCall::new("db", "query");
        assert_eq!(SqlGuard::call(&listing, &s), Decision::abstain());
        assert_eq!(SqlGuard::list(&listing, &s), Decision::abstain());
        assert_eq!(SqlGuard::PHASES, Phases::CALL);
        assert!(SqlGuard::CALL_TRIGGERS.is_none());
    }

    #[test]
    fn deny_list_selects_the_kinds() {
        let s = settings(r#"{"deny": ["drop", "delete-without-where"]}"#);
        for allowed in [
            "ALTER TABLE t ADD COLUMN c INT",
            "TRUNCATE t",
            "UPDATE t SET a = 1",
            "SELECT 1; SELECT 2",
            "GRANT SELECT ON t TO bob",
            "ALTER TABLE t ADD COLUMN c INT WEIRD STUFF",
        ] {
            assert_eq!(decide(allowed, &s), Decision::abstain(), "{allowed}");
        }
        assert!(decide("DROP TABLE t", &s).is_deny());
        assert!(decide("SELECT 1; DELETE FROM t", &s).is_deny());

        // `replace` is off by default and can be turned on.
        let s = settings(r#"{"deny": ["replace"]}"#);
        for sql in [
            "CREATE OR REPLACE VIEW secret_tbl AS SELECT 1",
            "CREATE OR REPLACE FUNCTION secret_tbl() RETURNS INT AS 'select 1' LANGUAGE sql",
            "REPLACE INTO secret_tbl VALUES (1)",
            "INSERT OR REPLACE INTO secret_tbl VALUES (1)",
        ] {
            let s = settings(r#"{"deny": ["replace"], "dialect": "mysql"}"#);
            let _ = &s;
            let d = if sql.starts_with("INSERT OR") {
                decide(
                    sql,
                    &settings(r#"{"deny": ["replace"], "dialect": "sqlite"}"#),
                )
            } else if sql.starts_with("REPLACE") {
                decide(sql, &s)
            } else {
                decide(
                    sql,
                    &settings(r#"{"deny": ["replace"], "dialect": "postgresql"}"#),
                )
            };
            assert_denied(&d, "destructive-sql", "replace", "arguments.sql", sql);
        }
        assert_eq!(decide("DROP TABLE t", &s), Decision::abstain());

        // Nothing listed: only unparseable text can still be refused, and only when asked.
        let none = settings(r#"{"deny": []}"#);
        assert_eq!(decide("DROP TABLE t", &none), Decision::abstain());
        assert_eq!(decide("DROP TABLE t PLEASE", &none), Decision::abstain());
    }

    #[test]
    fn on_parse_error_modes() {
        let deny = settings(r#"{"on_parse_error": "deny"}"#);
        let d = decide("find all the customers", &deny);
        assert_eq!(
            d,
            Decision::deny(
                "unparseable-sql",
                "arguments.sql is not SQL the guard can parse (generic dialect) and unparseable \
                 SQL is refused (sql-guard on_parse_error = \"deny\"); rewrite it as one \
                 standard statement"
            )
        );
        // Parseable SQL and an absent argument are not affected.
        assert_eq!(decide("SELECT 1", &deny), Decision::abstain());
        assert_eq!(
            SqlGuard::call(&call(json!({"x": "find"})), &deny),
            Decision::abstain()
        );
        // A keyword is still named.
        assert_denied(
            &decide("DROP TABLE t PLEASE", &deny),
            "unparseable-sql",
            "drop",
            "arguments.sql",
            "",
        );

        let abstain = settings(r#"{"on_parse_error": "abstain"}"#);
        assert_eq!(decide("DROP TABLE t PLEASE", &abstain), Decision::abstain());
        assert!(decide("DROP TABLE t", &abstain).is_deny());

        let default = GuardSettings::default();
        assert_eq!(default.on_parse_error, OnParseError::AbstainUnlessKeyword);
        assert_eq!(
            decide("find all the customers", &default),
            Decision::abstain()
        );
    }

    #[test]
    fn settings_defaults_are_accepted() {
        let s = settings("{}");
        assert_eq!(s.max_parse_bytes, DEFAULT_MAX_PARSE_BYTES);
        assert_eq!(s.tools, ["*:*"]);
        assert_eq!(s.arguments, ["sql", "query", "statement"]);
        assert_eq!(s.dialect, "generic");
        assert_eq!(s.on_parse_error, OnParseError::AbstainUnlessKeyword);
        let expected: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| *k != Kind::Replace)
            .collect();
        assert_eq!(s.deny, expected);
        for d in DIALECTS
            .iter()
            .chain(&["postgres", "PostgreSQL", "sparksql"])
        {
            settings(&json!({ "dialect": d }).to_string());
        }
        let all = json!({ "deny": Kind::ALL.map(Kind::name) }).to_string();
        assert_eq!(settings(&all).deny, Kind::ALL);
    }

    #[test]
    fn settings_refused_with_a_clear_message() {
        for (json, says) in [
            (r#"{"deny": ["revoke"]}"#, "unknown variant `revoke`"),
            (r#"{"deny": ["DROP"]}"#, "expected one of `drop`"),
            (
                r#"{"dialect": "foosql"}"#,
                "unknown dialect \"foosql\": expected one of generic",
            ),
            (r#"{"tools": ["nocolon"]}"#, "invalid pattern"),
            (r#"{"tools": ["db:que ry"]}"#, "invalid pattern"),
            (
                r#"{"on_parse_error": "maybe"}"#,
                "expected one of `deny`, `abstain-unless-keyword`, `abstain`",
            ),
            (r#"{"arguments": []}"#, "arguments is empty"),
            (
                r#"{"max_parse_bytes": 0}"#,
                "max_parse_bytes must be at least 1",
            ),
            (r#"{"max_parse_bytes": -1}"#, "invalid value"),
            (r#"{"arguments": ["params..sql"]}"#, "invalid argument path"),
            (r#"{"argument": ["sql"]}"#, "unknown field `argument`"),
        ] {
            match parse_settings::<GuardSettings>(json) {
                Ok(_) => panic!("{json} accepted"),
                Err(e) => assert!(e.contains(says), "{json}: {e}"),
            }
        }
    }

    #[test]
    fn sample_settings_file_is_valid_and_the_defaults() {
        let text = include_str!("../sql-guard.toml");
        let value: Value = toml::from_str(text).expect("sample is TOML");
        let s = settings(&value.to_string());
        let d = GuardSettings::default();
        assert_eq!(
            (s.tools, s.arguments, s.dialect, s.deny, s.on_parse_error),
            (d.tools, d.arguments, d.dialect, d.deny, d.on_parse_error)
        );
        assert_eq!(s.max_parse_bytes, d.max_parse_bytes);
    }

    #[test]
    fn long_text_is_scanned_not_parsed() {
        let s = GuardSettings::default();
        let rows: Vec<String> = (0..3000)
            .map(|i| format!("({i}, 'row {i}; drop it')"))
            .collect();
        let insert = format!("INSERT INTO secret_tbl (a, b) VALUES {}", rows.join(","));
        assert!(insert.len() > DEFAULT_MAX_PARSE_BYTES);
        assert_eq!(decide(&insert, &s), Decision::abstain());
        // Padding buys no pass: a long DELETE counts whatever its WHERE.
        let ids: Vec<String> = (0..4000).map(|i| i.to_string()).collect();
        let delete = format!(
            "DELETE FROM secret_tbl WHERE 1=1 OR id IN ({})",
            ids.join(",")
        );
        let d = decide(&delete, &s);
        assert_denied(
            &d,
            "sql-too-long",
            "delete-without-where",
            "arguments.sql",
            "long delete",
        );
        let hidden = format!("/* {} */ DROP TABLE secret_tbl", "x".repeat(20_000));
        assert_denied(
            &decide(&hidden, &s),
            "sql-too-long",
            "drop",
            "arguments.sql",
            "padded drop",
        );
        let batch = "INSERT INTO t VALUES (1);".repeat(1000);
        assert_denied(
            &decide(&batch, &s),
            "multiple-statements",
            "multiple-statements",
            "arguments.sql",
            "batch",
        );
        // The limit is a setting.
        let big = settings(r#"{"max_parse_bytes": 1000000}"#);
        assert_denied(
            &decide(&delete, &big),
            "destructive-sql",
            "delete-without-where",
            "arguments.sql",
            "parsed",
        );
        let small = settings(r#"{"max_parse_bytes": 10}"#);
        assert_denied(
            &decide("DELETE FROM t WHERE id = 1", &small),
            "sql-too-long",
            "delete-without-where",
            "arguments.sql",
            "small",
        );
        assert_eq!(
            decide("SELECT * FROM t WHERE a = 1", &small),
            Decision::abstain()
        );
    }

    #[test]
    fn text_after_a_statement_needs_a_semicolon() {
        let s = GuardSettings::default();
        // `Parser::parse_sql` stops quietly at a stray END; the guard reads on.
        assert!(decide("SELECT 1 END; DROP TABLE secret_tbl", &s).is_deny());
        assert_eq!(decide("SELECT 1 END", &s), Decision::abstain());
    }

    /// The scan skips text with none of `RULE_WORDS`: every word a rule acts on must be there.
    #[test]
    fn rule_words_cover_every_rule() {
        let w = Tok::Word;
        let rests: [&[Tok<'_>]; 7] = [
            &[w("TABLE")],
            &[w("OR"), w("REPLACE"), w("TABLE")],
            &[w("x"), w("FROM")],
            &[w("x"), w("SET")],
            &[w("x"), w("ON"), w("y"), w("TO")],
            &[w("INTO")],
            &[w("OVERWRITE")],
        ];
        for keyword in sqlparser::keywords::ALL_KEYWORDS {
            let fires = |rest: &[Tok<'_>]| {
                let later = |w: &str| rest.contains(&Tok::Word(w));
                keyword_rule(keyword, rest, &later).is_some()
            };
            if rests.iter().any(|rest| fires(rest)) {
                assert!(
                    RULE_WORDS.contains(keyword),
                    "{keyword} missing from RULE_WORDS"
                );
                assert!(has_rule_word(&format!("x;{}(", keyword.to_lowercase())));
            }
        }
        assert!(!has_rule_word("dropped updates, deleted_at"));
    }

    #[test]
    fn deep_or_huge_input_does_not_crash() {
        let s = GuardSettings::default();
        let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert_eq!(decide(&deep, &s), Decision::abstain());
        let deep_drop = format!("{}; DROP TABLE secret_tbl", deep);
        assert!(decide(&deep_drop, &s).is_deny());
        let many = "SELECT 1;".repeat(2000);
        assert_denied(
            &decide(&many, &s),
            "multiple-statements",
            "multiple-statements",
            "arguments.sql",
            "many",
        );
        // Many statement starts with look-ahead rules: linear, not quadratic, and no SET here.
        let starts = "(UPDATE x ".repeat(5000);
        assert_eq!(decide(&starts, &s), Decision::abstain());
        assert!(decide(&format!("{starts} SET"), &s).is_deny());
        let unterminated = "SELECT 'abc; DROP TABLE t";
        assert_eq!(decide(unterminated, &s), Decision::abstain());
        for odd in [
            "$",
            "$$",
            "[",
            "/*",
            "--",
            "'",
            "\\",
            "é; DROP TABLE t",
            "\u{feff}DROP TABLE t",
        ] {
            let _ = decide(odd, &s);
        }
    }
}
