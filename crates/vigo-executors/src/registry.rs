//! The one list of resource types. Adding a type = one file in `types/` + one line here.

use std::marker::PhantomData;
use std::sync::OnceLock;

use serde_json::Value;
use vigo_model::catalog::{Catalog, Common, FieldInfo, SpecError, TypeFacts};

use crate::executor::{Executor, Prepared, PreparedSpec, parse_spec};
use crate::types;

/// A registered resource type, with its spec type erased.
pub trait ResourceType: Send + Sync {
    fn name(&self) -> &'static str;
    fn summary(&self) -> &'static str;
    fn example(&self) -> &'static str;
    /// The JSON schema of the type-specific fields.
    fn schema(&self) -> Value;
    /// The fields of the spec (from the schema, computed once).
    fn fields(&self) -> &[FieldInfo];
    /// Parses the type-specific fields into a runnable spec.
    fn prepare(&self, fields: &Value) -> Result<Box<dyn Prepared>, SpecError>;
    /// Parses the fields and reports what the spec manages and references.
    fn inspect(&self, fields: &Value, common: Common<'_>) -> Result<TypeFacts, Vec<SpecError>>;
}

struct Registered<E> {
    fields: OnceLock<Vec<FieldInfo>>,
    spec: PhantomData<E>,
}

impl<E: Executor> ResourceType for Registered<E> {
    fn name(&self) -> &'static str {
        E::NAME
    }
    fn summary(&self) -> &'static str {
        E::SUMMARY
    }
    fn example(&self) -> &'static str {
        E::EXAMPLE
    }
    fn schema(&self) -> Value {
        schemars::schema_for!(E::Spec).to_value()
    }
    fn fields(&self) -> &[FieldInfo] {
        self.fields.get_or_init(|| fields_of(&self.schema()))
    }
    fn prepare(&self, fields: &Value) -> Result<Box<dyn Prepared>, SpecError> {
        let spec: E::Spec = parse_spec(fields)?;
        Ok(Box::new(PreparedSpec::<E>(spec)))
    }
    fn inspect(&self, fields: &Value, common: Common<'_>) -> Result<TypeFacts, Vec<SpecError>> {
        let spec: E::Spec = parse_spec(fields).map_err(|e| vec![e])?;
        Ok(TypeFacts { targets: E::targets(&spec), templates: E::templates(&spec), lints: E::lint(&spec, common) })
    }
}

fn entry<E: Executor>() -> Box<dyn ResourceType> {
    Box::new(Registered::<E> { fields: OnceLock::new(), spec: PhantomData })
}

/// Every built-in resource type.
pub struct Registry {
    types: Vec<Box<dyn ResourceType>>,
}

impl Registry {
    /// The built-in types, alphabetical.
    pub fn builtin() -> Self {
        Self {
            types: vec![
                // Keep this list alphabetical: one line per file in `types/`.
                entry::<types::blockinfile::BlockInFile>(),
                entry::<types::directory::Directory>(),
                entry::<types::exec::Exec>(),
                entry::<types::file::File>(),
                entry::<types::file_line::FileLine>(),
                entry::<types::host::Host>(),
                entry::<types::ini::Ini>(),
                entry::<types::json_file::JsonFile>(),
                entry::<types::replace::Replace>(),
                entry::<types::sshkey::SshKey>(),
                entry::<types::symlink::Symlink>(),
            ],
        }
    }

    pub fn get(&self, name: &str) -> Option<&dyn ResourceType> {
        self.types.iter().find(|t| t.name() == name).map(|t| t.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn ResourceType> {
        self.types.iter().map(|t| t.as_ref())
    }
}

/// The fields of a spec, from its JSON schema: name, required, type and doc comment.
pub fn fields_of(schema: &Value) -> Vec<FieldInfo> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, p)| FieldInfo {
            name: name.clone(),
            required: required.contains(&name.as_str()),
            kind: kind_of(p),
            doc: p.get("description").and_then(Value::as_str).unwrap_or("").to_string(),
        })
        .collect()
}

fn kind_of(p: &Value) -> String {
    match p.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => {
            let names: Vec<&str> = a.iter().filter_map(Value::as_str).filter(|s| *s != "null").collect();
            names.join("|")
        }
        _ if p.get("enum").is_some() => "string".into(),
        _ => "any".into(),
    }
}

impl Catalog for Registry {
    fn type_names(&self) -> Vec<&'static str> {
        self.types.iter().map(|t| t.name()).collect()
    }
    fn fields(&self, type_name: &str) -> Option<&[FieldInfo]> {
        self.get(type_name).map(ResourceType::fields)
    }
    fn inspect(&self, type_name: &str, fields: &Value, common: Common<'_>) -> Result<TypeFacts, Vec<SpecError>> {
        match self.get(type_name) {
            Some(t) => t.inspect(fields, common),
            None => Err(vec![SpecError { field: None, message: format!("unknown resource type `{type_name}`") }]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_alphabetical() {
        let names = Registry::builtin().type_names();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "registry must be alphabetical without duplicates");
    }

    #[test]
    fn every_type_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/types");
        let registry = Registry::builtin();
        for entry in std::fs::read_dir(&dir).expect("types dir") {
            let name = entry.expect("entry").file_name().to_string_lossy().to_string();
            let Some(stem) = name.strip_suffix(".rs") else { continue };
            if stem == "mod" {
                continue;
            }
            assert!(registry.get(stem).is_some(), "types/{name} is not in the registry");
        }
    }

    #[test]
    fn every_example_parses_into_its_spec() {
        for t in Registry::builtin().iter() {
            let items: Vec<serde_json::Map<String, Value>> =
                serde_saphyr::from_str(t.example()).unwrap_or_else(|e| panic!("{} example: {e}", t.name()));
            assert!(!items.is_empty(), "{} example is empty", t.name());
            for mut item in items {
                assert_eq!(item.remove("type").and_then(|v| v.as_str().map(str::to_string)).as_deref(), Some(t.name()));
                for common in ["name", "when", "notify", "depends_on"] {
                    item.remove(common);
                }
                t.prepare(&Value::Object(item)).unwrap_or_else(|e| panic!("{} example: {e:?}", t.name()));
            }
        }
    }
}
