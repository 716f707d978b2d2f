//! Rewriting regsync's Go template text into the form gtmpl executes with Go's semantics
//! ([`preprocess`]; see the parent module doc): a tokenizer for action bodies ([`Tok`]), the
//! rewriting of pipelines, commands and literals, and the nesting and recursion limits
//! ([`Blocks`]).

use super::funcs::ARG_METHODS;

#[derive(Clone, Debug, PartialEq)]
enum Tok<'a> {
    Space(&'a str),
    /// A string literal, decoded.
    Str(String),
    /// A character literal's value.
    Char(u32),
    LParen,
    RParen,
    Pipe,
    /// `:=`, `=`, `,`.
    Punct(&'a str),
    /// Identifiers, fields, variables, numbers, keywords.
    Word(&'a str),
}

pub(super) struct SyntaxError {
    pub(super) offset: usize,
    pub(super) message: String,
}

fn syntax(offset: usize, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        offset,
        message: message.into(),
    }
}

fn hex_value(s: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for c in s {
        v = v * 16 + (*c as char).to_digit(16)?;
    }
    Some(v)
}

/// Decodes one escape sequence after `\` at `b[i]`; returns the bytes and the next index.
fn decode_escape(b: &[u8], i: usize, quote: u8) -> Result<(Vec<u8>, usize), String> {
    let Some(&c) = b.get(i) else {
        return Err("invalid syntax".into());
    };
    let simple = |ch: u8| Ok((vec![ch], i + 1));
    match c {
        b'a' => simple(0x07),
        b'b' => simple(0x08),
        b'f' => simple(0x0c),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(0x0b),
        b'\\' => simple(b'\\'),
        c if c == quote => simple(c),
        b'x' => {
            let v = b
                .get(i + 1..i + 3)
                .and_then(hex_value)
                .ok_or("invalid syntax")?;
            Ok((vec![v as u8], i + 3))
        }
        b'0'..=b'7' => {
            let digits = b.get(i..i + 3).ok_or("invalid syntax")?;
            let mut v = 0u32;
            for d in digits {
                if !(b'0'..=b'7').contains(d) {
                    return Err("invalid syntax".into());
                }
                v = v * 8 + (d - b'0') as u32;
            }
            if v > 255 {
                return Err("invalid syntax".into());
            }
            Ok((vec![v as u8], i + 3))
        }
        b'u' | b'U' => {
            let n = if c == b'u' { 4 } else { 8 };
            let v = b
                .get(i + 1..i + 1 + n)
                .and_then(hex_value)
                .ok_or("invalid syntax")?;
            let ch = char::from_u32(v).ok_or("invalid syntax")?;
            let mut buf = [0u8; 4];
            Ok((ch.encode_utf8(&mut buf).as_bytes().to_vec(), i + 1 + n))
        }
        _ => Err("invalid syntax".into()),
    }
}

/// Tokenises the inside of an action, `body` starting at `base` in the template.
fn tokenize(body: &str, base: usize) -> Result<Vec<Tok<'_>>, SyntaxError> {
    let b = body.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                let start = i;
                while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
                    i += 1;
                }
                toks.push(Tok::Space(&body[start..i]));
            }
            b'"' => {
                let start = i;
                i += 1;
                let mut bytes = Vec::new();
                loop {
                    match b.get(i) {
                        None | Some(b'\n') => {
                            return Err(syntax(base + start, "unterminated quoted string"))
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let (decoded, next) = decode_escape(b, i + 1, b'"')
                                .map_err(|m| syntax(base + start, m))?;
                            bytes.extend(decoded);
                            i = next;
                        }
                        Some(&other) => {
                            bytes.push(other);
                            i += 1;
                        }
                    }
                }
                toks.push(Tok::Str(String::from_utf8_lossy(&bytes).into_owned()));
            }
            b'`' => {
                let start = i;
                let end = body[i + 1..]
                    .find('`')
                    .ok_or_else(|| syntax(base + start, "unterminated raw quoted string"))?;
                let raw = &body[i + 1..i + 1 + end];
                toks.push(Tok::Str(raw.replace('\r', "")));
                i += end + 2;
            }
            b'\'' => {
                let start = i;
                let bad = || syntax(base + start, "unterminated character constant");
                let (value, next) = match b.get(i + 1) {
                    Some(b'\\') => {
                        let (bytes, next) =
                            decode_escape(b, i + 2, b'\'').map_err(|m| syntax(base + start, m))?;
                        let v = match std::str::from_utf8(&bytes) {
                            Ok(s) if bytes.len() > 1 => s.chars().next().map(|c| c as u32),
                            _ => bytes.first().map(|b| *b as u32),
                        };
                        (v.ok_or_else(bad)?, next)
                    }
                    Some(b'\'') | Some(b'\n') | None => return Err(bad()),
                    Some(_) => {
                        let ch = body[i + 1..].chars().next().ok_or_else(bad)?;
                        (ch as u32, i + 1 + ch.len_utf8())
                    }
                };
                if b.get(next) != Some(&b'\'') {
                    return Err(bad());
                }
                toks.push(Tok::Char(value));
                i = next + 1;
            }
            b'(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            b':' if b.get(i + 1) == Some(&b'=') => {
                toks.push(Tok::Punct(":="));
                i += 2;
            }
            b'=' | b',' | b':' => {
                toks.push(Tok::Punct(&body[i..i + 1]));
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !matches!(
                        b[i],
                        b' ' | b'\t'
                            | b'\r'
                            | b'\n'
                            | b'"'
                            | b'`'
                            | b'\''
                            | b'('
                            | b')'
                            | b'|'
                            | b'='
                            | b','
                            | b':'
                    )
                {
                    i += 1;
                }
                // a word is at least one byte here; split a leading number/field boundary
                // is not needed (Go lexes `.A.B`, `$x.A`, `1.5` as one item too)
                toks.push(Tok::Word(&body[start..i]));
            }
        }
    }
    Ok(toks)
}

/// A string literal gtmpl lexes and unquotes correctly: a raw string with `\` doubled (gtmpl
/// unquotes raw strings too), CR as `\r`; backticks joined in with `print`.
fn emit_string(s: &str) -> String {
    let raw = |part: &str| format!("`{}`", part.replace('\\', "\\\\").replace('\r', "\\r"));
    if !s.contains('`') {
        return raw(s);
    }
    let mut parts = Vec::new();
    for (i, part) in s.split('`').enumerate() {
        if i > 0 {
            parts.push("\"`\"".to_string());
        }
        if !part.is_empty() {
            parts.push(raw(part));
        }
    }
    format!("(print {})", parts.join(" "))
}

/// Integer literals with a base prefix, `_` or a leading-zero octal become decimal.
fn emit_word(w: &str) -> String {
    let b = w.as_bytes();
    let (sign, digits) = match b.first() {
        Some(b'-') | Some(b'+') => (&w[..1], &w[1..]),
        _ => ("", w),
    };
    if !digits
        .as_bytes()
        .first()
        .is_some_and(|c| c.is_ascii_digit())
    {
        return w.to_string();
    }
    let clean = digits.replace('_', "");
    let lower = clean.to_ascii_lowercase();
    let parsed = if let Some(h) = lower.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        u64::from_str_radix(o, 8).ok()
    } else if let Some(bin) = lower.strip_prefix("0b") {
        u64::from_str_radix(bin, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|c| c.is_ascii_digit())
    {
        u64::from_str_radix(&lower[1..], 8).ok()
    } else if clean != digits && clean.bytes().all(|c| c.is_ascii_digit()) {
        clean.parse().ok()
    } else {
        None
    };
    match parsed {
        Some(v) => format!("{}{v}", if sign == "-" { "-" } else { "" }),
        None => w.to_string(),
    }
}

fn emit_tok(t: &Tok) -> String {
    match t {
        Tok::Space(s) | Tok::Punct(s) => s.to_string(),
        Tok::Str(s) => emit_string(s),
        Tok::Char(c) => c.to_string(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
        Tok::Pipe => "|".into(),
        Tok::Word(w) => emit_word(w),
    }
}

/// One operand of a command: its tokens (a paren group plus attached field words, or one
/// token).
fn operand_end(toks: &[Tok], start: usize) -> usize {
    let mut i = start;
    if toks[i] == Tok::LParen {
        let mut depth = 0;
        while i < toks.len() {
            match toks[i] {
                Tok::LParen => depth += 1,
                Tok::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    } else {
        i += 1;
    }
    // attached `.Field` chains: `(x).A.B`
    while i < toks.len() {
        match toks[i] {
            Tok::Word(w) if w.starts_with('.') && i > start => i += 1,
            _ => break,
        }
    }
    i
}

/// Rewrites a pipeline's tokens (see the module doc).
fn rewrite_pipeline(toks: &[Tok]) -> String {
    // split into commands at top-level pipes
    let mut commands: Vec<&[Tok]> = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => depth -= 1,
            Tok::Pipe if depth == 0 => {
                commands.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    commands.push(&toks[start..]);
    let mut out = String::new();
    for (ci, cmd) in commands.iter().enumerate() {
        if ci > 0 {
            out.push('|');
        }
        out.push_str(&rewrite_command(cmd, ci > 0));
    }
    out
}

fn rewrite_command(toks: &[Tok], piped: bool) -> String {
    // leading declaration `$x :=` / `$x, $y :=` / `$x =` is copied as is
    let mut out = String::new();
    let mut i = 0;
    let is_space = |t: &Tok| matches!(t, Tok::Space(_));
    {
        let mut j = 0;
        let mut saw_var = false;
        while j < toks.len() {
            match &toks[j] {
                Tok::Space(_) => j += 1,
                Tok::Word(w) if w.starts_with('$') => {
                    saw_var = true;
                    j += 1
                }
                Tok::Punct(",") => j += 1,
                Tok::Punct(":=") | Tok::Punct("=") if saw_var => {
                    // gtmpl has no assignment: `$x = v` declares `$x` again (the newest
                    // declaration wins; gtmpl scopes end only with range iterations)
                    for t in &toks[..j] {
                        out.push_str(&emit_tok(t));
                    }
                    out.push_str(":=");
                    i = j + 1;
                    break;
                }
                _ => break,
            }
        }
    }
    // operands
    let mut operands: Vec<(usize, usize)> = Vec::new();
    let mut j = i;
    while j < toks.len() {
        if is_space(&toks[j]) {
            j += 1;
            continue;
        }
        let end = operand_end(toks, j);
        operands.push((j, end));
        j = end;
    }
    let emit_operand = |(s, e): (usize, usize)| -> String {
        let part = &toks[s..e];
        let close = operand_paren_close(part);
        if part.first() == Some(&Tok::LParen) && close > 0 && close < part.len() {
            let mut text = String::from("(");
            text.push_str(&rewrite_pipeline(&part[1..close]));
            text.push(')');
            for t in &part[close + 1..] {
                text.push_str(&emit_tok(t));
            }
            text
        } else {
            part.iter().map(emit_tok).collect()
        }
    };
    let mut pos = i;
    for (k, &(s, e)) in operands.iter().enumerate() {
        for t in &toks[pos..s] {
            out.push_str(&emit_tok(t));
        }
        let mut text = emit_operand((s, e));
        if k == 0 && (operands.len() > 1 || piped) {
            if let Some(dot) = text.rfind('.') {
                let name = &text[dot + 1..];
                let receiver_ok =
                    text.starts_with('.') || text.starts_with('$') || text.starts_with('(');
                if receiver_ok && ARG_METHODS.contains(&name) && !name.is_empty() {
                    let mut receiver = text[..dot].to_string();
                    if receiver.is_empty() {
                        receiver = ".".into();
                    }
                    text = format!("_method \"{name}\" {receiver}");
                }
            }
        }
        out.push_str(&text);
        pos = e;
    }
    for t in &toks[pos..] {
        out.push_str(&emit_tok(t));
    }
    out
}

/// The index of the `)` closing the `(` at `part[0]` (parentheses are balanced: checked by
/// [`rewrite_action`]).
fn operand_paren_close(part: &[Tok]) -> usize {
    let mut depth = 0;
    for (i, t) in part.iter().enumerate() {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    part.len()
}

fn balanced(toks: &[Tok]) -> bool {
    let mut depth = 0i32;
    for t in toks {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

fn first_word<'a>(toks: &[Tok<'a>]) -> Option<(usize, &'a str)> {
    toks.iter().enumerate().find_map(|(i, t)| match t {
        Tok::Space(_) => None,
        Tok::Word(w) => Some(Some((i, *w))),
        _ => Some(None),
    })?
}

fn has_decl(toks: &[Tok]) -> bool {
    let mut saw_var = false;
    for t in toks {
        match t {
            Tok::Space(_) | Tok::Punct(",") => {}
            Tok::Word(w) if w.starts_with('$') => saw_var = true,
            Tok::Punct(":=") | Tok::Punct("=") => return saw_var,
            _ => return false,
        }
    }
    false
}

/// Rewrites one action body.
fn rewrite_action(toks: &[Tok]) -> String {
    let emit_all = |ts: &[Tok]| ts.iter().map(emit_tok).collect::<String>();
    if !balanced(toks) {
        // a syntax error: left for gtmpl to report
        return emit_all(toks);
    }
    let Some((i, word)) = first_word(toks) else {
        // literals, parens, ...: an output action
        if toks.iter().all(|t| matches!(t, Tok::Space(_))) {
            return emit_all(toks);
        }
        return format!("{} | _out ", rewrite_pipeline(toks));
    };
    match word {
        "end" | "break" | "continue" => emit_all(toks),
        "else" => {
            let rest = &toks[i + 1..];
            match first_word(rest) {
                Some((j, w @ ("if" | "with"))) => format!(
                    "{}{}{w}{}",
                    emit_all(&toks[..=i]),
                    emit_all(&rest[..j]),
                    rewrite_pipeline(&rest[j + 1..])
                ),
                _ => emit_all(toks),
            }
        }
        "if" | "with" | "range" => format!(
            "{}{}",
            emit_all(&toks[..=i]),
            rewrite_pipeline(&toks[i + 1..])
        ),
        "define" | "template" | "block" => {
            // keep the name literal, rewrite the pipeline after it
            let rest = &toks[i + 1..];
            let name = rest.iter().position(|t| !matches!(t, Tok::Space(_)));
            match name {
                Some(n) => format!(
                    "{}{}{}{}",
                    emit_all(&toks[..=i]),
                    emit_all(&rest[..n]),
                    emit_tok(&rest[n]),
                    if rest[n + 1..].iter().all(|t| matches!(t, Tok::Space(_))) {
                        emit_all(&rest[n + 1..])
                    } else {
                        rewrite_pipeline(&rest[n + 1..])
                    }
                ),
                None => emit_all(toks),
            }
        }
        _ => {
            if has_decl(toks) {
                rewrite_pipeline(toks)
            } else {
                format!("{} | _out ", rewrite_pipeline(toks))
            }
        }
    }
}

fn is_space_byte(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Rewrites Go template text into the form gtmpl executes with Go's semantics.
pub(super) fn preprocess(src: &str) -> Result<String, SyntaxError> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 16);
    let mut pos = 0;
    let mut blocks = Blocks::default();
    while let Some(rel) = src[pos..].find("{{") {
        let start = pos + rel;
        out.push_str(&src[pos..start]);
        let mut i = start + 2;
        // Trim markers are applied here (gtmpl trims spaces only, not newlines).
        if b.get(i) == Some(&b'-') && b.get(i + 1).is_some_and(|c| is_space_byte(*c)) {
            let keep = out.trim_end_matches([' ', '\t', '\r', '\n']).len();
            out.truncate(keep);
            i += 2;
        }
        let skip_space = |mut j: usize| {
            while b.get(j).is_some_and(|c| is_space_byte(*c)) {
                j += 1;
            }
            j
        };
        // comment
        if src[i..].starts_with("/*") {
            let end = src[i + 2..]
                .find("*/")
                .ok_or_else(|| syntax(start, "unclosed comment"))?;
            let mut j = i + 2 + end + 2;
            let mut trim_right = false;
            if b.get(j).is_some_and(|c| is_space_byte(*c)) && src[j + 1..].starts_with("-}}") {
                trim_right = true;
                j += 4;
            } else if src[j..].starts_with("}}") {
                j += 2;
            } else {
                return Err(syntax(start, "comment ends before closing delimiter"));
            }
            // keep the comment's newlines (line numbers of later errors)
            out.push_str("{{/*");
            out.push_str(&src[i + 2..i + 2 + end]);
            out.push_str("*/}}");
            pos = if trim_right { skip_space(j) } else { j };
            continue;
        }
        // find the end of the action, skipping quoted text
        let mut j = i;
        let (body_end, close_len) = loop {
            match b.get(j) {
                None => return Err(syntax(start, "unclosed action")),
                Some(&q @ (b'"' | b'\'')) => {
                    let open_at = j;
                    j += 1;
                    loop {
                        match b.get(j) {
                            None | Some(b'\n') => {
                                let what = if q == b'"' {
                                    "unterminated quoted string"
                                } else {
                                    "unterminated character constant"
                                };
                                return Err(syntax(open_at, what));
                            }
                            Some(b'\\') => j += 2,
                            Some(&c) => {
                                j += 1;
                                if c == q {
                                    break;
                                }
                            }
                        }
                    }
                }
                Some(b'`') => {
                    let open_at = j;
                    j += 1;
                    loop {
                        match b.get(j) {
                            None => return Err(syntax(open_at, "unterminated raw quoted string")),
                            Some(b'`') => {
                                j += 1;
                                break;
                            }
                            Some(_) => j += 1,
                        }
                    }
                }
                Some(&c) if is_space_byte(c) && src[j + 1..].starts_with("-}}") => {
                    break (j, 4);
                }
                Some(b'}') if src[j..].starts_with("}}") => break (j, 2),
                Some(_) => j += 1,
            }
        };
        let body = &src[i..body_end];
        let toks = tokenize(body, i)?;
        blocks.track(&toks, start)?;
        out.push_str("{{");
        out.push_str(&rewrite_action(&toks));
        // keep a newline before a trimmed close: it counts for line numbers
        if close_len == 4 {
            out.push_str(&src[body_end..body_end + 1]);
            out.push_str("}}");
            pos = skip_space(body_end + close_len);
        } else {
            out.push_str("}}");
            pos = body_end + close_len;
        }
    }
    out.push_str(&src[pos..]);
    blocks.check_recursion()?;
    Ok(out)
}

/// Deepest nesting of control blocks or parentheses accepted (gtmpl recurses on both).
const MAX_NESTING: usize = 100;

/// Open control blocks and the `template` calls made from each defined template, to refuse
/// nesting gtmpl cannot handle and recursive templates (which would overflow the stack; Go
/// stops at a depth of 100000 with an error).
#[derive(Default)]
struct Blocks {
    /// One entry per open block: the template name for `define`/`block`.
    stack: Vec<Option<String>>,
    /// `(caller, callee)`; the top level is `""`.
    calls: Vec<(String, String)>,
}

impl Blocks {
    fn current(&self) -> String {
        self.stack
            .iter()
            .rev()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_default()
    }

    fn track(&mut self, toks: &[Tok], offset: usize) -> Result<(), SyntaxError> {
        let mut depth = 0usize;
        for t in toks {
            match t {
                Tok::LParen => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(syntax(offset, "max expression depth exceeded"));
                    }
                }
                Tok::RParen => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        let Some((i, word)) = first_word(toks) else {
            return Ok(());
        };
        let name = || {
            toks[i + 1..].iter().find_map(|t| match t {
                Tok::Space(_) => None,
                Tok::Str(s) => Some(Some(s.clone())),
                _ => Some(None),
            })?
        };
        match word {
            "if" | "range" | "with" => self.stack.push(None),
            "define" => self.stack.push(Some(name().unwrap_or_default())),
            "block" => {
                let n = name().unwrap_or_default();
                self.calls.push((self.current(), n.clone()));
                self.stack.push(Some(n));
            }
            "template" => {
                if let Some(n) = name() {
                    self.calls.push((self.current(), n));
                }
            }
            "end" => {
                self.stack.pop();
            }
            _ => {}
        }
        if self.stack.len() > MAX_NESTING {
            return Err(syntax(offset, "max block depth exceeded"));
        }
        Ok(())
    }

    fn check_recursion(&self) -> Result<(), SyntaxError> {
        fn visit<'a>(
            node: &'a str,
            calls: &'a [(String, String)],
            path: &mut Vec<&'a str>,
            done: &mut Vec<&'a str>,
        ) -> bool {
            if path.contains(&node) {
                return true;
            }
            if done.contains(&node) {
                return false;
            }
            path.push(node);
            for (from, to) in calls {
                if from == node && visit(to, calls, path, done) {
                    return true;
                }
            }
            path.pop();
            done.push(node);
            false
        }
        let (mut path, mut done) = (Vec::new(), Vec::new());
        if visit("", &self.calls, &mut path, &mut done) {
            return Err(syntax(0, "exceeded maximum template depth (100000)"));
        }
        Ok(())
    }
}
