//! Functions whose output is many times their input (`repeat`, `lpad`, `range`, …) allocate
//! outside the memory pool and run to the end before the timeout can fire: `range(1, 2e9)` is
//! 16 GB in one call. Their size arguments must be constants whose product over the query stays
//! within [`MAX_AMPLIFICATION`].

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::QueryError;

/// The most elements or characters the amplifying calls of one query may multiply a value by,
/// together: enough to pad a column or list a short series, not to fill memory.
pub const MAX_AMPLIFICATION: f64 = 1024.0;

/// Refuses `plan` when an amplifying call's size is not a constant or the calls together
/// exceed [`MAX_AMPLIFICATION`].
pub fn check(plan: &LogicalPlan) -> Result<(), QueryError> {
    let mut product = 1.0_f64;
    let mut refusal = None;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(call) = e {
                    match factor(call.func.name(), &call.args) {
                        Ok(Some(f)) => product *= f.max(1.0),
                        Ok(None) => {}
                        Err(m) => {
                            refusal = Some(m);
                            return Ok(TreeNodeRecursion::Stop);
                        }
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if refusal.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    if let Some(m) = refusal {
        return Err(QueryError::Limit(m));
    }
    if product > MAX_AMPLIFICATION {
        return Err(QueryError::Limit(format!(
            "repeat, lpad, rpad, array_repeat, array_resize and range/generate_series may together multiply a value at most {MAX_AMPLIFICATION} times (this query: {product})"
        )));
    }
    Ok(())
}

/// How many times `name(args)` multiplies its input, if it is an amplifying function.
fn factor(name: &str, args: &[Expr]) -> Result<Option<f64>, String> {
    let size = |i: usize| -> Result<f64, String> {
        args.get(i)
            .and_then(constant)
            .ok_or_else(|| format!("{name}: the size must be a number written in the query"))
    };
    Ok(Some(match name {
        "repeat" | "lpad" | "rpad" | "array_repeat" | "array_resize" => size(1)?,
        "range" | "generate_series" => {
            let (start, stop, step) = match args.len() {
                1 => (0.0, size(0)?, 1.0),
                2 => (size(0)?, size(1)?, 1.0),
                _ => (size(0)?, size(1)?, size(2)?),
            };
            if step == 0.0 {
                return Err(format!("{name}: the step must not be 0"));
            }
            ((stop - start) / step).abs() + 1.0
        }
        _ => return Ok(None),
    }))
}

/// A numeric literal, through casts.
fn constant(expr: &Expr) -> Option<f64> {
    match expr {
        Expr::Literal(value, _) if !value.is_null() => match value.cast_to(&DataType::Float64) {
            Ok(ScalarValue::Float64(Some(v))) if v.is_finite() => Some(v),
            _ => None,
        },
        Expr::Cast(c) => constant(&c.expr),
        Expr::TryCast(c) => constant(&c.expr),
        Expr::Negative(e) => constant(e).map(|v| -v),
        _ => None,
    }
}
