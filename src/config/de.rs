//! Serde helpers reproducing regsync's (goccy/go-yaml) scalar handling (spec §3.1), and the
//! lenient YAML tree builder used before typed decoding.

use super::schema::StringList;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_yaml::{Mapping, Number, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Text of a float the way regsync prints it when a float lands in a string field:
/// shortest round-trip digits, no exponent, no trailing `.0` (`3.10` → `3.1`, `1.0` → `1`).
pub(crate) fn go_float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{f}")
    }
}

struct StringVisitor;

impl<'de> Visitor<'de> for StringVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(go_float_text(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        string(d)
    }
}

/// A string field: scalars of any type are converted to text, null is `""`.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(StringVisitor)
}

/// A string converted with [`string`], usable as a list element or map key/value.
struct GoString(String);

impl<'de> Deserialize<'de> for GoString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string(d).map(GoString)
    }
}

struct StringVecVisitor;

impl<'de> Visitor<'de> for StringVecVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of strings")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        string_vec(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(GoString(s)) = seq.next_element()? {
            out.push(s);
        }
        Ok(out)
    }
}

/// A list of strings; each element converted like [`string`]; null is an empty list.
pub fn string_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(StringVecVisitor)
}

struct StringMapVisitor;

impl<'de> Visitor<'de> for StringMapVisitor {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of strings")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        string_map(d)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((GoString(k), GoString(v))) = map.next_entry()? {
            out.insert(k, v);
        }
        Ok(out)
    }
}

/// An optional list of strings (absent: `None`; present, null included: like [`string_vec`]).
/// A [`string_vec`] held as a shared list.
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<StringList, D::Error> {
    string_vec(d).map(StringList::from)
}

/// An optional [`string_list`] (absent: `None`).
pub fn opt_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StringList>, D::Error> {
    string_list(d).map(Some)
}

/// An optional integer (absent: `None`; present: like [`int`]).
pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    int(d).map(Some)
}

/// A string→string map; keys and values converted like [`string`]; null is an empty map.
pub fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    d.deserialize_any(StringMapVisitor)
}

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = i128;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
        Ok(v as i128)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
        Ok(v as i128)
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<i128, E> {
        Ok(v)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<i128, E> {
        i128::try_from(v).map_err(|_| E::custom(format!("integer {v} out of range")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i128, E> {
        if v.is_finite() {
            Ok(v.trunc() as i128)
        } else {
            Err(E::invalid_type(de::Unexpected::Float(v), &self))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
        if let Ok(n) = v.parse::<i128>() {
            return Ok(n);
        }
        match v.parse::<f64>() {
            Ok(f) if f.is_finite() && !v.contains(|c: char| c.is_ascii_alphabetic()) => {
                Ok(f.trunc() as i128)
            }
            _ => Err(E::invalid_type(de::Unexpected::Str(v), &self)),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<i128, E> {
        Ok(0)
    }
    fn visit_none<E: de::Error>(self) -> Result<i128, E> {
        Ok(0)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<i128, D::Error> {
        d.deserialize_any(IntVisitor)
    }
}

/// A signed integer field: accepts integers, floats (truncated), numeric strings, null (0).
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = d.deserialize_any(IntVisitor)?;
    i64::try_from(v).map_err(|_| de::Error::custom(format!("integer {v} out of range")))
}

/// An unsigned integer field, like [`int`] but negative values are rejected.
pub fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = d.deserialize_any(IntVisitor)?;
    u64::try_from(v)
        .map_err(|_| de::Error::custom(format!("integer {v} out of range for unsigned")))
}

struct FloatVisitor;

impl<'de> Visitor<'de> for FloatVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        v.parse::<f64>()
            .map_err(|_| E::invalid_type(de::Unexpected::Str(v), &self))
    }
    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Ok(0.0)
    }
    fn visit_none<E: de::Error>(self) -> Result<f64, E> {
        Ok(0.0)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<f64, D::Error> {
        d.deserialize_any(FloatVisitor)
    }
}

/// A float field: accepts numbers, numeric strings and null (0).
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(FloatVisitor)
}

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(BoolVisitor)
    }
}

/// A plain (non-pointer) boolean: strict like Go (`"true"`, `yes` rejected), null = false.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(BoolVisitor)
}

struct DurationVisitor;

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration string such as \"90s\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        duration(d)
    }
}

/// A duration field: must be a string (a bare YAML number, even `0`, is a type error, spec
/// §3.1); the syntax is checked later by `config::validate`.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// A YAML tree built leniently: duplicate keys are allowed (the later one wins) and merge keys
/// (`<<: *a` or `<<: [*a, *b]`) are applied in document order, so a merge placed after explicit
/// keys overrides them (regsync quirk, spec §3.1). Within a merge list the first mapping wins.
pub(crate) struct Tree(pub Value);

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

fn merge_into<E: de::Error>(map: &mut Mapping, value: Value) -> Result<(), E> {
    match value {
        Value::Mapping(src) => {
            for (k, v) in src {
                map.insert(k, v);
            }
            Ok(())
        }
        Value::Sequence(items) => {
            for item in items.into_iter().rev() {
                match item {
                    Value::Mapping(src) => {
                        for (k, v) in src {
                            map.insert(k, v);
                        }
                    }
                    _ => return Err(E::custom("expected a mapping for merging")),
                }
            }
            Ok(())
        }
        Value::Null => Ok(()),
        _ => Err(E::custom(
            "expected a mapping or list of mappings for merging",
        )),
    }
}

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree(Value::Number(Number::from(v))))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Tree, E> {
        Ok(Tree(Value::Number(Number::from(v))))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Tree, E> {
        Ok(Tree(match i64::try_from(v) {
            Ok(n) => Value::Number(Number::from(n)),
            Err(_) => Value::String(v.to_string()),
        }))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Tree, E> {
        Ok(Tree(match u64::try_from(v) {
            Ok(n) => Value::Number(Number::from(n)),
            Err(_) => Value::String(v.to_string()),
        }))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Tree, E> {
        Ok(Tree(Value::Number(Number::from(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Tree, E> {
        Ok(Tree(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Tree, E> {
        Ok(Tree(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Tree, E> {
        Ok(Tree(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut out = Vec::new();
        while let Some(Tree(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Tree(Value::Sequence(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut out = Mapping::new();
        while let Some(Tree(k)) = map.next_key()? {
            let Tree(v) = map.next_value()?;
            if k.as_str() == Some("<<") {
                merge_into::<A::Error>(&mut out, v)?;
            } else {
                out.insert(k, v);
            }
        }
        Ok(Tree(Value::Mapping(out)))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Tree, A::Error> {
        // A value with a custom tag (`!foo value`): the tag is ignored.
        use de::VariantAccess;
        let (_tag, variant): (String, _) = data.variant()?;
        variant.newtype_variant_seed(TreeSeed)
    }
}

struct TreeSeed;

impl<'de> DeserializeSeed<'de> for TreeSeed {
    type Value = Tree;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }
}
