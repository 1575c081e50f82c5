//! The dict of an `.npy` header: a Python literal such as
//! `{'descr': '|u1', 'fortran_order': False, 'shape': (10, 8), }`, parsed by hand so that reading
//! codes needs no array library.
//!
//! The grammar is the part of Python's literal syntax that numpy writes in headers: strings,
//! integers, `True`, `False`, `None`, tuples, lists and dicts. Nesting is bounded by the caller's
//! bracket count, so the recursion stays shallow whatever the file holds.

use std::fmt;

/// A parsed literal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Literal>),
    List(Vec<Literal>),
    Dict(Vec<(Literal, Literal)>),
}

impl fmt::Display for Literal {
    /// As Python's `repr` writes it, so that errors quote the header as numpy users know it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items = |f: &mut fmt::Formatter<'_>, items: &[Literal]| {
            items.iter().enumerate().try_for_each(|(i, item)| {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{item}")
            })
        };
        match self {
            Literal::Str(text) => write!(f, "'{}'", text.escape_debug()),
            Literal::Int(value) => write!(f, "{value}"),
            Literal::Bool(true) => f.write_str("True"),
            Literal::Bool(false) => f.write_str("False"),
            Literal::None => f.write_str("None"),
            Literal::Tuple(values) => {
                f.write_str("(")?;
                items(f, values)?;
                f.write_str(if values.len() == 1 { ",)" } else { ")" })
            }
            Literal::List(values) => {
                f.write_str("[")?;
                items(f, values)?;
                f.write_str("]")
            }
            Literal::Dict(entries) => {
                f.write_str("{")?;
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{key}: {value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// The three fields every `.npy` header holds.
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) descr: Literal,
    pub(crate) fortran_order: bool,
    /// Dimensions as written; negative ones are the caller's to refuse.
    pub(crate) shape: Vec<i128>,
}

/// Parses the header dict (the bytes after the length field). The error says what is wrong.
pub(crate) fn parse(text: &[u8]) -> Result<Header, String> {
    let text = std::str::from_utf8(text).map_err(|_| "the header is not ASCII text".to_string())?;
    let mut parser = Parser { text, at: 0 };
    let value = parser.value()?;
    parser.skip_space();
    if parser.at != text.len() {
        return Err(format!(
            "unexpected text after the header dict at byte {}",
            parser.at
        ));
    }
    let Literal::Dict(entries) = value else {
        return Err(format!("the header is {value}, not a dict"));
    };
    let field = |name: &str| {
        let mut found = entries
            .iter()
            .filter(|(key, _)| matches!(key, Literal::Str(key) if key == name));
        match (found.next(), found.next()) {
            (Some((_, value)), None) => Ok(value),
            (None, _) => Err(format!("the header has no '{name}' key")),
            (Some(_), Some(_)) => Err(format!("the header has two '{name}' keys")),
        }
    };
    if entries.len() != 3 {
        return Err(format!(
            "the header has {} keys; numpy writes exactly 'descr', 'fortran_order' and 'shape'",
            entries.len()
        ));
    }
    let descr = field("descr")?.clone();
    let fortran_order = match field("fortran_order")? {
        Literal::Bool(value) => *value,
        other => return Err(format!("'fortran_order' is {other}, not True or False")),
    };
    let shape = match field("shape")? {
        Literal::Tuple(values) => values
            .iter()
            .map(|value| match value {
                Literal::Int(dim) => Ok(*dim),
                other => Err(format!("the shape holds {other}, not an integer")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(format!("'shape' is {other}, not a tuple")),
    };
    Ok(Header {
        descr,
        fortran_order,
        shape,
    })
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Consumes `token` (after any space) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn error(&self, expected: &str) -> String {
        match self.rest().chars().next() {
            Some(found) => format!("expected {expected} at byte {}, found {found:?}", self.at),
            None => format!("expected {expected}, but the header ends"),
        }
    }

    fn value(&mut self) -> Result<Literal, String> {
        self.skip_space();
        let Some(first) = self.rest().chars().next() else {
            return Err(self.error("a value"));
        };
        match first {
            '\'' | '"' => self.string(first),
            '(' => {
                self.at += 1;
                let (values, trailing_comma) = self.sequence(")")?;
                // `(x)` is x itself in Python; `(x,)` is a tuple.
                if values.len() == 1 && !trailing_comma {
                    Ok(values.into_iter().next().expect("one value"))
                } else {
                    Ok(Literal::Tuple(values))
                }
            }
            '[' => {
                self.at += 1;
                Ok(Literal::List(self.sequence("]")?.0))
            }
            '{' => {
                self.at += 1;
                self.dict()
            }
            '-' | '+' | '0'..='9' => self.int(),
            _ => {
                for (word, value) in [
                    ("True", Literal::Bool(true)),
                    ("False", Literal::Bool(false)),
                    ("None", Literal::None),
                ] {
                    if self.eat(word) {
                        return Ok(value);
                    }
                }
                Err(self.error("a string, number, True, False, None, tuple, list or dict"))
            }
        }
    }

    /// Values separated by commas up to `close`; whether a comma ended them.
    fn sequence(&mut self, close: &str) -> Result<(Vec<Literal>, bool), String> {
        let mut values = Vec::new();
        loop {
            if self.eat(close) {
                let trailing_comma = !values.is_empty();
                return Ok((values, trailing_comma));
            }
            values.push(self.value()?);
            if self.eat(close) {
                return Ok((values, false));
            }
            if !self.eat(",") {
                return Err(self.error(&format!("',' or '{close}'")));
            }
        }
    }

    fn dict(&mut self) -> Result<Literal, String> {
        let mut entries = Vec::new();
        loop {
            if self.eat("}") {
                return Ok(Literal::Dict(entries));
            }
            let key = self.value()?;
            if !self.eat(":") {
                return Err(self.error("':'"));
            }
            entries.push((key, self.value()?));
            if self.eat("}") {
                return Ok(Literal::Dict(entries));
            }
            if !self.eat(",") {
                return Err(self.error("',' or '}'"));
            }
        }
    }

    fn string(&mut self, quote: char) -> Result<Literal, String> {
        self.at += 1;
        let mut text = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                c if c == quote => {
                    self.at += offset + 1;
                    return Ok(Literal::Str(text));
                }
                // numpy writes no escapes; a backslash keeps the next character as it is.
                '\\' => match chars.next() {
                    Some((_, escaped)) => text.push(escaped),
                    None => break,
                },
                '\n' => break,
                c => text.push(c),
            }
        }
        Err("a string in the header is not closed".into())
    }

    fn int(&mut self) -> Result<Literal, String> {
        let rest = self.rest();
        let sign = usize::from(rest.starts_with(['-', '+']));
        let digits = rest[sign..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - sign);
        let literal = &self.text[self.at..self.at + sign + digits];
        self.at += sign + digits;
        literal
            .parse()
            .map(Literal::Int)
            .map_err(|_| format!("the number {literal:?} in the header is not a usable integer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_headers_parse() {
        let header =
            parse(b"{'descr': '|u1', 'fortran_order': False, 'shape': (10, 8), }   \n").unwrap();
        assert_eq!(header.descr, Literal::Str("|u1".into()));
        assert!(!header.fortran_order);
        assert_eq!(header.shape, [10, 8]);
        let header =
            parse(b"{\"shape\": (4,), \"fortran_order\": True, \"descr\": [('a', '<f4')]}")
                .unwrap();
        assert_eq!(header.shape, [4]);
        assert!(header.fortran_order);
        assert_eq!(header.descr.to_string(), "[('a', '<f4')]");
        let scalar = parse(b"{'descr': '<u1', 'fortran_order': False, 'shape': ()}").unwrap();
        assert!(scalar.shape.is_empty());
        let big = parse(
            b"{'descr': '|u1', 'fortran_order': False, 'shape': (18446744073709551615, 128)}",
        )
        .unwrap();
        assert_eq!(big.shape, [u64::MAX as i128, 128]);
    }

    #[test]
    fn broken_headers_say_what_is_wrong() {
        let cases: [(&[u8], &str); 9] = [
            (b"", "header ends"),
            (b"{'descr': '|u1', 'fortran_order': False}", "2 keys"),
            (b"{'descr': '|u1', 'fortran_order': 0, 'shape': (1, 1)}", "not True or False"),
            (b"{'descr': '|u1', 'fortran_order': False, 'shape': [1, 1]}", "not a tuple"),
            (b"{'descr': '|u1', 'fortran_order': False, 'shape': (1, 'a')}", "not an integer"),
            (b"{'descr': '|u1, 'fortran_order': False, 'shape': (1, 1)}", "expected"),
            (b"{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1)} x", "after the header"),
            (b"(1, 2)", "not a dict"),
            (b"{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999999999999999999999999, 1)}", "not a usable integer"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains(expected),
                "{}: {err}",
                String::from_utf8_lossy(text)
            );
        }
        assert!(parse(&[0xff, b'{', b'}']).unwrap_err().contains("ASCII"));
    }
}
