//! Whitespace and comments out of the console's own JavaScript and CSS, once at start-up, so
//! the browser downloads and parses less. Deliberately conservative: strings, template
//! literals and regular expressions are copied as written, a line break stays a line break
//! wherever it could end a statement (automatic semicolon insertion sees the same code), and a
//! space goes only where no two tokens could run together.

/// Characters that end or start a token with no space needed beside them.
fn structural(c: char) -> bool {
    matches!(c, '{' | '}' | '(' | ')' | '[' | ']' | ',' | ';')
}

fn word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

/// Words after which `/` starts a regular expression, not a division.
const REGEX_AFTER: &[&str] = &[
    "return",
    "typeof",
    "case",
    "do",
    "else",
    "in",
    "of",
    "new",
    "delete",
    "void",
    "throw",
    "instanceof",
    "yield",
    "await",
];

pub fn minify_js(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    // Whitespace seen since the last token: none, a space, or a line break.
    let mut gap: Option<bool> = None;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            gap = Some(gap.unwrap_or(false) || c == '\n');
            i += 1;
            continue;
        }
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            gap = Some(true);
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut newline = false;
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                newline |= chars[i] == '\n';
                i += 1;
            }
            i += 2;
            gap = Some(gap.unwrap_or(false) || newline);
            continue;
        }
        if let Some(newline) = gap.take() {
            let prev = out.chars().last();
            // A line break after an opening bracket, a comma, a semicolon or a colon, or before
            // a closing bracket, a comma or a dot, cannot end a statement: drop it.
            let inert = prev.is_some_and(|p| matches!(p, '{' | '(' | '[' | ',' | ';' | ':'))
                || matches!(c, '}' | ')' | ']' | ',' | '.');
            if newline && !inert && prev.is_some() {
                out.push('\n');
            } else if let Some(p) = prev
                && needs_space(p, c)
            {
                out.push(' ');
            }
        }
        match c {
            '\'' | '"' => i = copy_string(&chars, i, &mut out),
            '`' => i = copy_template(&chars, i, &mut out),
            '/' if regex_allowed(&out) => i = copy_regex(&chars, i, &mut out),
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out.push('\n');
    out
}

/// Characters of operators: two of them side by side may read as another (`+ +`, `/ /`).
fn operator(c: char) -> bool {
    matches!(
        c,
        '=' | '<'
            | '>'
            | '!'
            | '&'
            | '|'
            | '?'
            | ':'
            | '*'
            | '%'
            | '^'
            | '~'
            | '+'
            | '-'
            | '/'
            | '.'
    )
}

fn needs_space(prev: char, next: char) -> bool {
    if structural(prev) || structural(next) {
        return false;
    }
    if word(prev) && word(next) {
        return true;
    }
    // `x = 'a'`, `a ? b : c`, `case 'k'`: an operator or quote beside a word or quote cannot
    // merge with it; two operators might, and a word before a backtick would tag the template.
    if operator(prev) && operator(next) {
        return true;
    }
    next == '`' && word(prev)
}

/// Whether a `/` here starts a regular expression: after an operator, an opening bracket,
/// the start, or a keyword that takes an expression.
fn regex_allowed(out: &str) -> bool {
    let trimmed = out.trim_end();
    let Some(last) = trimmed.chars().last() else {
        return true;
    };
    if word(last) {
        let start = trimmed
            .char_indices()
            .rev()
            .find(|(_, c)| !word(*c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        return REGEX_AFTER.contains(&&trimmed[start..]);
    }
    !matches!(last, ')' | ']' | '}' | '\'' | '"' | '`')
}

fn copy_string(chars: &[char], mut i: usize, out: &mut String) -> usize {
    let quote = chars[i];
    out.push(quote);
    i += 1;
    while i < chars.len() {
        let c = chars[i];
        out.push(c);
        i += 1;
        if c == '\\' {
            if let Some(&escaped) = chars.get(i) {
                out.push(escaped);
                i += 1;
            }
        } else if c == quote {
            break;
        }
    }
    i
}

/// A template literal as written, with the code of each `${…}` copied as written too.
fn copy_template(chars: &[char], mut i: usize, out: &mut String) -> usize {
    out.push('`');
    i += 1;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            out.push(c);
            if let Some(&escaped) = chars.get(i + 1) {
                out.push(escaped);
            }
            i += 2;
            continue;
        }
        if c == '`' {
            out.push(c);
            return i + 1;
        }
        if c == '$' && chars.get(i + 1) == Some(&'{') {
            out.push_str("${");
            i += 2;
            let mut depth = 1;
            while i < chars.len() && depth > 0 {
                match chars[i] {
                    '\'' | '"' => i = copy_string(chars, i, out),
                    '`' => i = copy_template(chars, i, out),
                    ch => {
                        if ch == '{' {
                            depth += 1;
                        } else if ch == '}' {
                            depth -= 1;
                        }
                        out.push(ch);
                        i += 1;
                    }
                }
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    i
}

fn copy_regex(chars: &[char], mut i: usize, out: &mut String) -> usize {
    out.push('/');
    i += 1;
    let mut class = false;
    while i < chars.len() {
        let c = chars[i];
        out.push(c);
        i += 1;
        match c {
            '\\' => {
                if let Some(&escaped) = chars.get(i) {
                    out.push(escaped);
                    i += 1;
                }
            }
            '[' => class = true,
            ']' => class = false,
            '/' if !class => break,
            '\n' => break,
            _ => {}
        }
    }
    while i < chars.len() && chars[i].is_ascii_alphabetic() {
        out.push(chars[i]);
        i += 1;
    }
    i
}

/// CSS without comments and with whitespace collapsed; none removed where it separates
/// selectors or values (`a :hover`, `calc(1px - 2px)`), only beside `{ } ; ,` and `>`.
pub fn minify_css(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let mut gap = false;
    let tight = |c: char| matches!(c, '{' | '}' | ';' | ',' | '>');
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
            gap = true;
            continue;
        }
        if c.is_whitespace() {
            gap = true;
            i += 1;
            continue;
        }
        if gap {
            if let Some(p) = out.chars().last()
                && !tight(p)
                && !tight(c)
            {
                out.push(' ');
            }
            gap = false;
        }
        if c == '"' || c == '\'' {
            i = copy_string(&chars, i, &mut out);
            continue;
        }
        out.push(c);
        i += 1;
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn javascript_loses_comments_and_indentation_only() {
        let src = "// head\nimport { h } from './dom.js';\n\n/** doc\n * more */\nexport function f(a, b) {\n  const x = a - -b; // tail\n  return x / 2 + /[/]x\\//g.test(`${a}  ${ {k: '}'}.k }\n  // kept`);\n}\n";
        let min = minify_js(src);
        assert_eq!(
            min,
            "import{h}from'./dom.js';export function f(a,b){const x=a- -b;return x/2+ /[/]x\\//g.test(`${a}  ${ {k: '}'}.k }\n  // kept`);}\n"
        );
    }

    #[test]
    fn line_breaks_that_may_end_a_statement_stay() {
        assert_eq!(minify_js("let a = b\nlet c = d\n"), "let a=b\nlet c=d\n");
        assert_eq!(minify_js("return\nx"), "return\nx\n");
        assert_eq!(minify_js("a\n++b"), "a\n++b\n");
        assert_eq!(minify_js("f(a,\n  b)\n  .then(c)\n"), "f(a,b).then(c)\n");
    }

    #[test]
    fn division_is_not_a_regex_and_keywords_start_one() {
        assert_eq!(minify_js("a = b / c / d;"), "a=b/c/d;\n");
        assert_eq!(minify_js("x = (y) / 2;"), "x=(y)/2;\n");
        assert_eq!(minify_js("return /a b/.test(s);"), "return/a b/.test(s);\n");
        // Kept apart: `a - -b`, `a / /r/` (a comment if joined), a tagged template.
        assert_eq!(minify_js("a - -b + +c"), "a- -b+ +c\n");
        assert_eq!(minify_js("a / /r/.source"), "a/ /r/.source\n");
        assert_eq!(minify_js("tag `x`; f(`y`)"), "tag `x`;f(`y`)\n");
        assert_eq!(minify_js("c ? 'a' : x => x"), "c?'a':x=>x\n");
        assert_eq!(minify_js("s.replace(/ +/g, '')"), "s.replace(/ +/g,'')\n");
    }

    #[test]
    fn css_keeps_the_spaces_that_mean_something() {
        let src = "/* c */\n.a :hover, .b > .c {\n  width: calc(100% - 2px);\n  font: 14px \"Segoe  UI\";\n}\n";
        assert_eq!(
            minify_css(src),
            ".a :hover,.b>.c{width: calc(100% - 2px);font: 14px \"Segoe  UI\";}\n"
        );
    }
}
