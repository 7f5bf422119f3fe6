//! What a SQL text may be before DataFusion plans it (a preprocess, `sql`): a query that
//! only reads, of bounded shape. The planner's work and stack grow with an expression's
//! depth: a sum of 20,000 terms overflowed the stack and aborted the process, and one of
//! 5,000 took 26 s to plan. So a chain of operators, and the nesting of brackets, are
//! bounded before planning; long lists (`IN (...)`, many columns) are not.

use datafusion::prelude::SQLOptions;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// Operators in one chain (`a + b + c ...` between commas, at one bracket depth).
pub const MAX_OPERATOR_CHAIN: usize = 256;
/// Brackets inside brackets.
pub const MAX_NESTING: usize = 64;

/// Queries may only read: no DDL (external tables reading local files), no DML or `COPY`
/// (writing files), no `SET`.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// Refuses a text whose expressions are too deep to plan safely. Text that does not
/// tokenize is left to the planner, which says what is wrong with it.
pub fn check_shape(sql: &str) -> Result<(), String> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return Ok(()) };
    // Per open bracket: operators in the current chain.
    let mut chains: Vec<usize> = vec![0];
    for token in &tokens {
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                chains.push(0);
                if chains.len() > MAX_NESTING + 1 {
                    return Err(format!("the query nests brackets deeper than {MAX_NESTING}"));
                }
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                if chains.len() > 1 {
                    chains.pop();
                }
            }
            Token::Comma | Token::SemiColon => {
                if let Some(chain) = chains.last_mut() {
                    *chain = 0;
                }
            }
            token if is_operator(token) => {
                if let Some(chain) = chains.last_mut() {
                    *chain += 1;
                    if *chain > MAX_OPERATOR_CHAIN {
                        return Err(format!(
                            "an expression chains more than {MAX_OPERATOR_CHAIN} operators; \
                             split it (e.g. into several columns or queries)"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_operator(token: &Token) -> bool {
    match token {
        Token::Word(word) => matches!(word.keyword, Keyword::AND | Keyword::OR),
        Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::Mod
        | Token::StringConcat
        | Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Ampersand
        | Token::Pipe
        | Token::Caret
        | Token::ShiftLeft
        | Token::ShiftRight
        | Token::DoubleColon => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_chains_and_deep_nesting_are_refused_long_lists_are_not() {
        let sum = format!("SELECT {}", vec!["1"; 20_000].join("+"));
        assert!(check_shape(&sum).unwrap_err().contains("more than 256 operators"));
        let nested = format!("SELECT {}1{}", "(".repeat(100), ")".repeat(100));
        assert!(check_shape(&nested).unwrap_err().contains("deeper than 64"));
        let list = (0..5_000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        assert_eq!(check_shape(&format!("SELECT * FROM t WHERE a IN ({list}) AND b = 1 OR c < 2")), Ok(()));
        assert_eq!(check_shape("SELECT (a + 1) * 2 AS x, -b FROM input"), Ok(()));
    }
}

/// DataFusion's error as one line of text: the innermost error (the wrappers around it
/// repeat its text), without a backtrace.
pub fn error_text(error: &datafusion::error::DataFusionError) -> String {
    error.find_root().strip_backtrace()
}
