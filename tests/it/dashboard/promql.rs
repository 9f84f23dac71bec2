//! Just enough PromQL for the dashboard check: the metrics an expression selects, each with the
//! label names the expression uses on it (in its `{…}` selector and in the `by (…)` or
//! `without (…)` clause of every aggregation around it). String literals, ranges (`[5m]`),
//! numbers and Grafana variables are skipped; an identifier followed by `(` is a function or
//! an aggregation. Vector matching (`on`, `ignoring`, `group_left`) is not understood: its
//! label list would be reported as unknown metrics, a loud failure rather than a silent pass.

/// One metric an expression selects, with the labels the expression uses on it.
#[derive(Debug, PartialEq)]
pub struct MetricUse {
    pub name: String,
    pub labels: Vec<String>,
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Open,
    Close,
    /// A `{…}` label matcher list: its label names.
    Selector(Vec<String>),
    /// Anything else: operators, commas, numbers, durations, strings, ranges, variables.
    Other,
}

/// Binary operators and modifiers written as words: neither metrics nor functions.
const KEYWORDS: [&str; 5] = ["and", "or", "unless", "bool", "offset"];
/// Words that introduce a list of label names for the aggregation they belong to.
const GROUPING: [&str; 2] = ["by", "without"];

/// Every metric `expr` selects, in order of appearance.
pub fn metric_uses(expr: &str) -> Vec<MetricUse> {
    let tokens = tokenize(expr);
    let closing = matching_parentheses(&tokens);
    let mut uses: Vec<(usize, MetricUse)> = Vec::new();
    let mut groupings: Vec<(std::ops::Range<usize>, Vec<String>)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let Token::Ident(word) = &tokens[i] else {
            i += 1;
            continue;
        };
        let called = match tokens.get(i + 1) {
            Some(Token::Open) => true,
            // An aggregation with its clause first: `sum by (route) (…)`.
            Some(Token::Ident(next)) => GROUPING.contains(&next.as_str()),
            _ => false,
        };
        if called && GROUPING.contains(&word.as_str()) {
            let list_end = closing[i + 1];
            let labels = tokens[i + 2..list_end]
                .iter()
                .filter_map(|t| match t {
                    Token::Ident(label) => Some(label.clone()),
                    _ => None,
                })
                .collect();
            groupings.push((aggregated_range(&tokens, &closing, i, list_end), labels));
            i = list_end + 1;
        } else if called || KEYWORDS.contains(&word.as_str()) {
            i += 1;
        } else {
            let labels = match tokens.get(i + 1) {
                Some(Token::Selector(labels)) => labels.clone(),
                _ => Vec::new(),
            };
            let name = word.clone();
            uses.push((i, MetricUse { name, labels }));
            i += 1;
        }
    }
    for (at, metric) in &mut uses {
        for (range, labels) in &groupings {
            if range.contains(at) {
                metric.labels.extend(labels.iter().cloned());
            }
        }
    }
    uses.into_iter().map(|(_, metric)| metric).collect()
}

/// The token range an aggregation's `by`/`without` clause (keyword at `keyword`, list closed
/// at `list_end`) applies to: the parenthesized argument after the list (`sum by (x) (…)`), or
/// the one before the keyword (`sum(…) by (x)`).
fn aggregated_range(
    tokens: &[Token],
    closing: &[usize],
    keyword: usize,
    list_end: usize,
) -> std::ops::Range<usize> {
    if keyword > 0 && tokens[keyword - 1] == Token::Close {
        let open = (0..keyword - 1)
            .rev()
            .find(|&o| tokens[o] == Token::Open && closing[o] == keyword - 1)
            .unwrap_or(0);
        return open..keyword;
    }
    let open = list_end + 1;
    match tokens.get(open) {
        Some(Token::Open) => open..closing[open] + 1,
        _ => open..open,
    }
}

/// For each `(` token, the index of its `)` (other entries: the index itself).
fn matching_parentheses(tokens: &[Token]) -> Vec<usize> {
    let mut closing: Vec<usize> = (0..tokens.len()).collect();
    let mut open = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Open => open.push(i),
            Token::Close => {
                let start = open.pop().unwrap_or_else(|| panic!("unbalanced `)`"));
                closing[start] = i;
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "unbalanced `(`");
    closing
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn tokenize(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            '"' | '\'' | '`' => {
                i = skip_string(&chars, i);
                tokens.push(Token::Other);
            }
            '[' => {
                i = skip_until(&chars, i, ']');
                tokens.push(Token::Other);
            }
            '{' => {
                let end = skip_until(&chars, i, '}');
                tokens.push(Token::Selector(selector_labels(&chars[i + 1..end])));
                i = end;
            }
            '$' => {
                // A Grafana variable: `$name` or `${name}`.
                i = if chars.get(i + 1) == Some(&'{') {
                    skip_until(&chars, i, '}')
                } else {
                    word_end(&chars, i + 1) - 1
                };
                tokens.push(Token::Other);
            }
            c if is_ident_start(c) => {
                let end = word_end(&chars, i);
                tokens.push(Token::Ident(chars[i..end].iter().collect()));
                i = end - 1;
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number or a duration (`0.99`, `5m`).
                i = word_end(&chars, i) - 1;
                tokens.push(Token::Other);
            }
            c if c.is_whitespace() => {}
            _ => tokens.push(Token::Other),
        }
        i += 1;
    }
    tokens
}

/// The index just past the identifier characters (and `.`) starting at `start`.
fn word_end(chars: &[char], start: usize) -> usize {
    (start..chars.len())
        .find(|&j| !(is_ident_char(chars[j]) || chars[j] == '.'))
        .unwrap_or(chars.len())
}

/// The index of the first `close` after `start` outside string literals.
fn skip_until(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != close {
        if matches!(chars[i], '"' | '\'' | '`') {
            i = skip_string(chars, i);
        }
        i += 1;
    }
    assert!(i < chars.len(), "unclosed `{close}`");
    i
}

/// The index of the quote closing the string literal that opens at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    assert!(i < chars.len(), "unclosed string literal");
    i
}

/// The label names of a matcher list (`route=~"$route", status_class="5xx"`).
fn selector_labels(inside: &[char]) -> Vec<String> {
    let mut labels = Vec::new();
    let mut i = 0;
    while i < inside.len() {
        let c = inside[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(inside, i);
        } else if is_ident_start(c) {
            let end = word_end(inside, i);
            labels.push(inside[i..end].iter().collect());
            i = end - 1;
        }
        i += 1;
    }
    labels
}

#[test]
fn labels_come_from_selectors_and_the_aggregations_around_a_metric() {
    let _turn = crate::support::lock::shared_blocking();
    let uses = metric_uses(
        "histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~\"$route\", x=\"y{z}\"}[$__rate_interval]))) \
         / sum(rate(b_total[5m])) without (origin) + time() - c offset 1h",
    );
    let expect = |name: &str, labels: &[&str]| MetricUse {
        name: name.to_string(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
    };
    assert_eq!(
        uses,
        [
            expect("a_bucket", &["route", "x", "le", "route"]),
            expect("b_total", &["origin"]),
            expect("c", &[]),
        ]
    );
}
