//! Raw YAML reading: module files into located key/value entries.
//!
//! Every mapping key keeps its line and column, so later passes can point at the
//! exact field at fault. Values stay untyped (`serde_json::Value`) until the
//! resource type's own spec takes them.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

/// A line/column pair inside one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u64,
    pub col: u64,
}

impl Pos {
    fn of<T>(s: &Spanned<T>) -> Self {
        Self { line: s.referenced.line(), col: s.referenced.column() }
    }
}

/// A mapping entry whose key and value both carry their positions.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Value,
    pub value_pos: Pos,
}

/// A YAML mapping read as ordered, located entries (duplicates kept, so they can be reported).
#[derive(Debug, Clone, Default)]
pub struct Entries {
    pub pos: Pos,
    pub entries: Vec<Entry>,
    /// Keys that are not strings (e.g. `1: x` or `[a]: b`), by position.
    pub bad_keys: Vec<Pos>,
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Entries::default();
                while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
                    let key_pos = Pos::of(&key);
                    match key.value.0 {
                        Some(text) => {
                            let value: Spanned<Value> = map.next_value()?;
                            out.entries.push(Entry {
                                key: text,
                                key_pos,
                                value_pos: Pos::of(&value),
                                value: value.value,
                            });
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                            out.bad_keys.push(key_pos);
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// A mapping key: `Some(text)` for a scalar, `None` for anything else.
struct KeyText(Option<String>);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(KeyText(match v {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }))
    }
}

/// A module file as read: its top-level entries, with `resources` kept as located mappings.
#[derive(Debug, Default)]
pub struct RawModule {
    pub entries: Vec<Entry>,
    pub resources: Option<(Pos, Vec<Spanned<ResourceItem>>)>,
    pub bad_keys: Vec<Pos>,
}

/// One item of `resources:`: a mapping, or something else (reported as an error).
#[derive(Debug)]
pub enum ResourceItem {
    Map(Entries),
    NotAMap,
}

impl<'de> Deserialize<'de> for ResourceItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResourceItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a resource (a mapping with `name` and `type`)")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ResourceItem, A::Error> {
                Entries::deserialize(de::value::MapAccessDeserializer::new(map)).map(ResourceItem::Map)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ResourceItem, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ResourceItem::NotAMap)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<ResourceItem, E> {
                Ok(ResourceItem::NotAMap)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ResourceItem, E> {
                Ok(ResourceItem::NotAMap)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<ResourceItem, E> {
                Ok(ResourceItem::NotAMap)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ResourceItem, E> {
                Ok(ResourceItem::NotAMap)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ResourceItem, E> {
                Ok(ResourceItem::NotAMap)
            }
            fn visit_unit<E: de::Error>(self) -> Result<ResourceItem, E> {
                Ok(ResourceItem::NotAMap)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawModule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawModule;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a module: a mapping with `name` and `resources`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawModule, A::Error> {
                let mut out = RawModule::default();
                while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
                    let key_pos = Pos::of(&key);
                    match key.value.0 {
                        Some(k) if k == "resources" => {
                            let list: Spanned<ResourceList> = map.next_value()?;
                            out.resources = Some((key_pos, list.value.0));
                        }
                        Some(k) => {
                            let value: Spanned<Value> = map.next_value()?;
                            out.entries.push(Entry { key: k, key_pos, value_pos: Pos::of(&value), value: value.value });
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                            out.bad_keys.push(key_pos);
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// `resources:` — a list, or `null` for an empty module.
struct ResourceList(Vec<Spanned<ResourceItem>>);

impl<'de> Deserialize<'de> for ResourceList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<Vec<Spanned<ResourceItem>>>::deserialize(d).map(|v| ResourceList(v.unwrap_or_default()))
    }
}

/// The parser settings every Vigo YAML file is read with: YAML 1.2 booleans only
/// (`yes`/`no`/`on`/`off` stay strings), duplicate keys are errors, no snippets in messages.
pub fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    }
}

/// A YAML error's position and message, without the parser's own location suffix.
pub fn yaml_error(err: &serde_saphyr::Error) -> (Pos, String) {
    let pos = err.location().map(|l| Pos { line: l.line(), col: l.column() }).unwrap_or_default();
    let text = err.to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    let msg = match first.find(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    (pos, msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> RawModule {
        serde_saphyr::from_str_with_options(src, options()).expect("parses")
    }

    #[test]
    fn keys_and_values_keep_positions() {
        let m = parse("name: web\nresources:\n  - name: a\n    type: file\n    mode: \"0644\"\n");
        assert_eq!(m.entries[0].key, "name");
        assert_eq!(m.entries[0].key_pos, Pos { line: 1, col: 1 });
        let (_, items) = m.resources.expect("resources");
        let ResourceItem::Map(e) = &items[0].value else { panic!("map") };
        assert_eq!(e.entries[2].key, "mode");
        assert_eq!(e.entries[2].key_pos, Pos { line: 5, col: 5 });
        assert_eq!(e.entries[2].value, Value::String("0644".into()));
        assert_eq!(items[0].referenced.line(), 3);
    }

    #[test]
    fn strict_booleans_keep_yes_a_string() {
        let m = parse("name: web\nflag: yes\nother: true\nshort: y\nno: n\noff: off\n");
        assert_eq!(m.entries[1].value, Value::String("yes".into()));
        assert_eq!(m.entries[2].value, Value::Bool(true));
        for i in 3..6 {
            assert!(m.entries[i].value.is_string(), "{:?} became {:?}", m.entries[i].key, m.entries[i].value);
        }
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = serde_saphyr::from_str_with_options::<RawModule>("name: [unclosed\n", options()).expect_err("bad");
        let (pos, msg) = yaml_error(&err);
        assert!(pos.line >= 1, "{pos:?} {msg}");
        assert!(!msg.is_empty());
    }
}
