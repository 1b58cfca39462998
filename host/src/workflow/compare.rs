//! Comparisons in `if:` conditions must compare like with like: minijinja
//! orders values of different kinds silently (`"3" > 9` is true), which is
//! how a step output written as text makes a condition wrong without a
//! word. Each comparison the condition evaluates is checked first: text
//! against a number (either way round, with `==`, `!=`, `<`, `<=`, `>`,
//! `>=`) is an error that says how to convert.
//!
//! The walk follows what evaluation would evaluate: `and`/`or` and
//! `x if c else y` are short-circuited the same way, so a guard such as
//! `steps.a.output.n is number and steps.a.output.n > 3` is not an error.
//! Comparisons nested in filter or function arguments, or deeper than 64
//! operators (the first terms of a very long `a and b and …` chain), are not
//! checked; a condition is at most 4,096 characters (validation).

use minijinja::machinery::ast::{self, BinOpKind, CompareOpKind, Expr};
use minijinja::value::ValueKind;
use serde_json::Value;

use super::Templates;

/// Check every comparison `expr` (an `if:` condition, without `{{ }}`)
/// would evaluate against `ctx`. A syntax error is left to the evaluation,
/// which reports it with its position.
pub fn check_comparisons(templates: &Templates, expr: &str, ctx: &Value) -> Result<(), String> {
    // Validation keeps conditions this short; one that is not (a definition
    // pinned before the limit) is left to the evaluation alone.
    if expr.len() > 4 * super::validate::MAX_CONDITION_CHARS {
        return Ok(());
    }
    let Ok(parsed) = minijinja::machinery::parse_expr(expr) else {
        return Ok(());
    };
    let walker = Walker {
        templates,
        source: expr,
        ctx: minijinja::Value::from_serialize(ctx),
    };
    walker.walk(&parsed, 0)
}

/// How deep the walk goes into nested operators; deeper comparisons are
/// not checked (the walk is recursive, and `a and b and …` nests).
const MAX_DEPTH: usize = 64;

struct Walker<'a> {
    templates: &'a Templates,
    source: &'a str,
    ctx: minijinja::Value,
}

impl Walker<'_> {
    fn walk(&self, expr: &Expr<'_>, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        let depth = depth + 1;
        match expr {
            Expr::UnaryOp(unary) => self.walk(&unary.expr, depth),
            Expr::BinOp(binary) => {
                self.walk(&binary.left, depth)?;
                let right_evaluated = match binary.op {
                    BinOpKind::ScAnd => self.truthy(&binary.left) == Some(true),
                    BinOpKind::ScOr => self.truthy(&binary.left) == Some(false),
                    _ => true,
                };
                if right_evaluated {
                    self.walk(&binary.right, depth)?;
                }
                match operator(binary.op) {
                    Some(op) => self.compare(&binary.left, op, &binary.right),
                    None => Ok(()),
                }
            }
            Expr::Compare(chain) => {
                self.walk(&chain.expr, depth)?;
                let mut left = &chain.expr;
                for step in &chain.ops {
                    self.walk(&step.expr, depth)?;
                    if let Some(op) = chained_operator(step.op) {
                        self.compare(left, op, &step.expr)?;
                    }
                    left = &step.expr;
                }
                Ok(())
            }
            Expr::IfExpr(choice) => {
                self.walk(&choice.test_expr, depth)?;
                match self.truthy(&choice.test_expr) {
                    Some(true) => self.walk(&choice.true_expr, depth),
                    Some(false) => match &choice.false_expr {
                        Some(otherwise) => self.walk(otherwise, depth),
                        None => Ok(()),
                    },
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// The source text of a sub-expression. A node's own span may cover
    /// only its last part (`output.n` of `steps.count.output.n`), so the
    /// extent is that of the whole subtree, closed over brackets left open
    /// (a call's `)`, an item's `]`). Text that does not compile back is
    /// not checked.
    fn text(&self, expr: &Expr<'_>) -> Option<&str> {
        let (start, end) = extent(expr);
        let mut end = end.min(self.source.len());
        let bytes = self.source.as_bytes();
        let mut open = open_brackets(self.source.get(start..end)?);
        while open > 0 && end < bytes.len() {
            match bytes[end] {
                b')' | b']' | b'}' => open -= 1,
                b'(' | b'[' | b'{' => open += 1,
                _ => {}
            }
            end += 1;
        }
        self.source.get(start..end)
    }

    /// The value of a sub-expression; `None` when it cannot be evaluated
    /// (the condition's own evaluation reports that).
    fn value(&self, expr: &Expr<'_>) -> Option<minijinja::Value> {
        self.templates
            .eval_expression_value(self.text(expr)?, &self.ctx)
    }

    fn truthy(&self, expr: &Expr<'_>) -> Option<bool> {
        self.value(expr).map(|value| value.is_true())
    }

    fn compare(&self, left: &Expr<'_>, op: &str, right: &Expr<'_>) -> Result<(), String> {
        let (Some(a), Some(b)) = (self.value(left), self.value(right)) else {
            return Ok(());
        };
        let (text, number) = match (a.kind(), b.kind()) {
            (ValueKind::String, ValueKind::Number) => (&a, &b),
            (ValueKind::Number, ValueKind::String) => (&b, &a),
            _ => return Ok(()),
        };
        let shown = |value: &minijinja::Value| {
            let json = serde_json::to_string(value).unwrap_or_default();
            if json.chars().count() > 40 {
                format!("{}…", json.chars().take(40).collect::<String>())
            } else {
                json
            }
        };
        Err(format!(
            "`{} {op} {}` compares text ({}) with a number ({}); convert the text with \
             `| int` or `| float` (or the number with `| string`)",
            self.text(left).unwrap_or_default().trim(),
            self.text(right).unwrap_or_default().trim(),
            shown(text),
            shown(number),
        ))
    }
}

/// The byte range covered by `expr` and everything under it.
fn extent(expr: &Expr<'_>) -> (usize, usize) {
    let span = expr.span();
    let mut range = (span.start_offset as usize, span.end_offset as usize);
    let mut widen = |child: &Expr<'_>| {
        let (start, end) = extent(child);
        range = (range.0.min(start), range.1.max(end));
    };
    let args = |args: &[ast::CallArg<'_>], widen: &mut dyn FnMut(&Expr<'_>)| {
        for arg in args {
            match arg {
                ast::CallArg::Pos(e)
                | ast::CallArg::Kwarg(_, e)
                | ast::CallArg::PosSplat(e)
                | ast::CallArg::KwargSplat(e) => widen(e),
            }
        }
    };
    match expr {
        Expr::GetAttr(node) => widen(&node.expr),
        Expr::GetItem(node) => {
            widen(&node.expr);
            widen(&node.subscript_expr);
        }
        Expr::Filter(node) => {
            if let Some(inner) = &node.expr {
                widen(inner);
            }
            args(&node.args, &mut widen);
        }
        Expr::Test(node) => {
            widen(&node.expr);
            args(&node.args, &mut widen);
        }
        Expr::Call(node) => {
            widen(&node.expr);
            args(&node.args, &mut widen);
        }
        Expr::UnaryOp(node) => widen(&node.expr),
        Expr::BinOp(node) => {
            widen(&node.left);
            widen(&node.right);
        }
        Expr::Slice(node) => widen(&node.expr),
        Expr::List(node) => node.items.iter().for_each(&mut widen),
        _ => {}
    }
    range
}

/// How many brackets `text` leaves open (quoted text skipped).
fn open_brackets(text: &str) -> i32 {
    let mut open = 0;
    let mut quote = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(' | '[' | '{') => open += 1,
            (None, ')' | ']' | '}') => open -= 1,
            _ => {}
        }
    }
    open
}

fn operator(op: BinOpKind) -> Option<&'static str> {
    Some(match op {
        BinOpKind::Eq => "==",
        BinOpKind::Ne => "!=",
        BinOpKind::Lt => "<",
        BinOpKind::Lte => "<=",
        BinOpKind::Gt => ">",
        BinOpKind::Gte => ">=",
        _ => return None,
    })
}

fn chained_operator(op: CompareOpKind) -> Option<&'static str> {
    Some(match op {
        CompareOpKind::Eq => "==",
        CompareOpKind::Ne => "!=",
        CompareOpKind::Lt => "<",
        CompareOpKind::Lte => "<=",
        CompareOpKind::Gt => ">",
        CompareOpKind::Gte => ">=",
        CompareOpKind::In | CompareOpKind::NotIn => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::template::evaluate_condition;
    use serde_json::json;

    fn ctx() -> Value {
        json!({ "steps": { "count": { "output": { "n": "3", "m": 3, "word": "ok" } } } })
    }

    fn check(condition: &str) -> Result<bool, String> {
        evaluate_condition(&Templates::new(), condition, &ctx())
    }

    #[test]
    fn text_compared_with_a_number_is_an_error() {
        for condition in [
            "steps.count.output.n > 9",
            "9 < steps.count.output.n",
            "steps.count.output.n == 3",
            "{{ steps.count.output.m >= 1 and steps.count.output.n != 3 }}",
            "not (steps.count.output.n <= 2)",
            "1 < steps.count.output.n < 5",
            "steps.count.output['n'] > 9",
            "(steps.count.output.n) > 9",
            "steps['count'].output.n > [9, 1][0]",
            "steps.count.output.n > (steps.count.output.m | int)",
        ] {
            let error = check(condition).unwrap_err();
            assert!(
                error.contains("compares text (\"3\") with a number") && error.contains("`| int`"),
                "{condition}: {error}"
            );
        }
        assert_eq!(
            check("steps.count.output.n > 9").unwrap_err(),
            "`steps.count.output.n > 9` compares text (\"3\") with a number (9); convert the \
             text with `| int` or `| float` (or the number with `| string`)"
        );
    }

    #[test]
    fn a_long_chain_is_walked_to_a_bounded_depth() {
        // 600 `and`s nest 600 deep (to the left): the comparisons near the
        // top (the last ones) are checked; the walk stops at its depth limit
        // instead of recursing 600 deep, and ends quickly either way.
        let chain = vec!["1 > 0"; 600].join(" and ");
        let started = std::time::Instant::now();
        let error = check(&format!("{chain} and steps.count.output.n > 9")).unwrap_err();
        assert!(error.contains("compares text"), "{error}");
        let _unchecked_when_deepest = check(&format!("steps.count.output.n > 9 and {chain}"));
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn like_with_like_and_unevaluated_branches_pass() {
        assert_eq!(check("steps.count.output.n | int > 2"), Ok(true));
        assert_eq!(check("steps.count.output.m > 9"), Ok(false));
        assert_eq!(check("steps.count.output.word == 'ok'"), Ok(true));
        assert_eq!(check("steps.count.output.n == '3'"), Ok(true));
        assert_eq!(check("steps.count.output.n in ['3']"), Ok(true));
        // Short-circuited: the comparison is never evaluated.
        assert_eq!(
            check("steps.count.output.n is number and steps.count.output.n > 2"),
            Ok(false)
        );
        assert_eq!(
            check("steps.count.output.m > 2 or steps.count.output.n > 2"),
            Ok(true)
        );
        assert_eq!(
            check("(steps.count.output.n > 1) if steps.count.output.n is number else true"),
            Ok(true)
        );
    }
}
