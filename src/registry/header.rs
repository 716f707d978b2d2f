//! A small lexer for the structured headers parsed by hand (`WWW-Authenticate` in `auth.rs`,
//! `Link` in `listing.rs`): tokens, quoted strings with backslash escapes (RFC 9110 §5.6).

pub(crate) struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(s: &'a str) -> Self {
        Lexer { s, pos: 0 }
    }

    pub fn eof(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Back to a position saved with [`Lexer::pos`] (one token of look-ahead).
    pub fn reset(&mut self, pos: usize) {
        self.pos = pos;
    }

    pub fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    pub fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !f(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    pub fn skip_ws(&mut self) {
        self.take_while(|c| c == ' ' || c == '\t');
    }

    pub fn token(&mut self) -> &'a str {
        self.take_while(is_tchar)
    }

    /// A parameter value: a quoted string, or (leniently, as some registries send unquoted
    /// URLs) anything up to the next separator.
    pub fn value(&mut self) -> Result<String, String> {
        if self.peek() == Some('"') {
            self.quoted()
        } else {
            Ok(self
                .take_while(|c| c != ',' && c != ';' && c != ' ' && c != '\t')
                .to_string())
        }
    }

    /// A quoted string starting at the current `"`; `\x` stands for `x`.
    pub fn quoted(&mut self) -> Result<String, String> {
        if !self.eat('"') {
            return Err(format!("expected '\"' at byte {}", self.pos));
        }
        let mut out = String::new();
        loop {
            let c = self
                .peek()
                .ok_or_else(|| "unterminated quoted string".to_string())?;
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let e = self
                        .peek()
                        .ok_or_else(|| "unterminated quoted string".to_string())?;
                    self.pos += e.len_utf8();
                    out.push(e);
                }
                _ => out.push(c),
            }
        }
    }
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_unescape() {
        let mut l = Lexer::new(r#""a \"b\" \\c",rest"#);
        assert_eq!(l.quoted().unwrap(), r#"a "b" \c"#);
        assert!(l.eat(','));
        assert_eq!(l.token(), "rest");
        assert!(Lexer::new(r#""open"#).quoted().is_err());
    }
}
