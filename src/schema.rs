//! Personalize's dataset rules (reserved fields, their types and order) and
//! the Avro schema JSON that describes a CSV.
//!
//! The tables here are the single source of truth for what a dataset type
//! requires; mapping, the `schema` command and (later) validation read them.
//! Reserved fields take the type Personalize documents, nullable exactly where
//! Personalize allows a null; metadata fields are always nullable, so the
//! schema never depends on whether a run happened to see a null.

use std::fmt;
use std::str::FromStr;

/// The Personalize dataset types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    Interactions,
    Users,
    Items,
    Actions,
    ActionInteractions,
}

impl Dataset {
    pub const ALL: [Dataset; 5] = [
        Dataset::Interactions,
        Dataset::Users,
        Dataset::Items,
        Dataset::Actions,
        Dataset::ActionInteractions,
    ];

    /// The name used on the command line and for default output files.
    pub fn cli_name(self) -> &'static str {
        match self {
            Dataset::Interactions => "interactions",
            Dataset::Users => "users",
            Dataset::Items => "items",
            Dataset::Actions => "actions",
            Dataset::ActionInteractions => "action-interactions",
        }
    }

    /// The Avro record name Personalize requires for this dataset type.
    pub fn record_name(self) -> &'static str {
        match self {
            Dataset::Interactions => "Interactions",
            Dataset::Users => "Users",
            Dataset::Items => "Items",
            Dataset::Actions => "Actions",
            Dataset::ActionInteractions => "ActionInteractions",
        }
    }

    /// Reserved fields in Personalize's documented order.
    pub(crate) fn reserved(self) -> &'static [Reserved] {
        use AvroType::{Float, Long, String as Str};
        use Rule::*;
        const fn r(
            name: &'static str,
            ty: AvroType,
            nullable: bool,
            required: bool,
            rule: Rule,
        ) -> Reserved {
            Reserved {
                name,
                ty,
                nullable,
                required,
                rule,
            }
        }
        const INTERACTIONS: &[Reserved] = &[
            r("USER_ID", Str, false, true, Id),
            r("ITEM_ID", Str, false, true, Id),
            r("TIMESTAMP", Long, false, true, Timestamp),
            r("EVENT_TYPE", Str, false, false, Text),
            r("EVENT_VALUE", Float, true, false, Number),
            r("IMPRESSION", Str, true, false, List),
            r("RECOMMENDATION_ID", Str, true, false, Text),
            r("EVENT_ATTRIBUTION_SOURCE", Str, true, false, Text),
        ];
        const USERS: &[Reserved] = &[r("USER_ID", Str, false, true, Id)];
        const ITEMS: &[Reserved] = &[
            r("ITEM_ID", Str, false, true, Id),
            r("CREATION_TIMESTAMP", Long, false, false, Timestamp),
        ];
        const ACTIONS: &[Reserved] = &[
            r("ACTION_ID", Str, false, true, Id),
            r("CREATION_TIMESTAMP", Long, false, false, Timestamp),
            r("VALUE", Long, true, false, Integer),
            r("TYPE", Str, true, false, Text),
            r("EXPIRATION_TIMESTAMP", Long, true, false, Timestamp),
            r("REPEAT_FREQUENCY", Long, true, false, Integer),
        ];
        const ACTION_INTERACTIONS: &[Reserved] = &[
            r("USER_ID", Str, false, true, Id),
            r("ACTION_ID", Str, false, true, Id),
            r("TIMESTAMP", Long, false, true, Timestamp),
            r("EVENT_TYPE", Str, false, true, Text),
            r("IMPRESSION", Str, true, false, List),
            r("RECOMMENDATION_ID", Str, true, false, Text),
        ];
        match self {
            Dataset::Interactions => INTERACTIONS,
            Dataset::Users => USERS,
            Dataset::Items => ITEMS,
            Dataset::Actions => ACTIONS,
            Dataset::ActionInteractions => ACTION_INTERACTIONS,
        }
    }

    /// The reserved field whose name equals `name` ignoring case and
    /// non-alphanumerics.
    pub(crate) fn reserved_named(self, name: &str) -> Option<&'static Reserved> {
        let wanted = normalize_name(name);
        self.reserved()
            .iter()
            .find(|r| normalize_name(r.name) == wanted)
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

impl FromStr for Dataset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = normalize_name(s);
        Dataset::ALL
            .into_iter()
            .find(|d| normalize_name(d.cli_name()) == wanted)
            .ok_or_else(|| {
                format!("unknown dataset {s:?}; expected interactions, users, items, actions or action-interactions")
            })
    }
}

/// A field name with case and non-alphanumerics removed: the form in which
/// Personalize compares names, and in which we match source keys.
pub(crate) fn normalize_name(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The Avro types a Personalize field can have (booleans are written as the
/// strings `True`/`False`, which Personalize reads as categorical values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AvroType {
    Int,
    Long,
    Float,
    Double,
    String,
}

impl AvroType {
    pub fn as_str(self) -> &'static str {
        match self {
            AvroType::Int => "int",
            AvroType::Long => "long",
            AvroType::Float => "float",
            AvroType::Double => "double",
            AvroType::String => "string",
        }
    }
}

impl FromStr for AvroType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "int" => Ok(AvroType::Int),
            "long" => Ok(AvroType::Long),
            "float" => Ok(AvroType::Float),
            "double" => Ok(AvroType::Double),
            "string" => Ok(AvroType::String),
            _ => Err(format!(
                "unknown type {s:?}; expected int, long, float, double or string"
            )),
        }
    }
}

/// How a reserved field's values are converted (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Strings, or integers written without decimals; 1–256 characters.
    Id,
    /// Epoch seconds from s/ms/µs/ns numbers, numeric strings or ISO 8601.
    Timestamp,
    /// A float, from numbers or numeric strings.
    Number,
    /// An integer, from numbers or numeric strings.
    Integer,
    /// A plain string.
    Text,
    /// A string, or an array of strings joined with `|`.
    List,
}

/// A field name Personalize reserves for a dataset type.
#[derive(Debug)]
pub(crate) struct Reserved {
    pub name: &'static str,
    pub ty: AvroType,
    pub nullable: bool,
    /// Every dataset of this type must have the field.
    pub required: bool,
    pub rule: Rule,
}

/// One field of the Avro schema, in CSV column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaField {
    pub name: String,
    pub ty: AvroType,
    pub nullable: bool,
    pub categorical: bool,
    pub textual: bool,
}

/// The Avro schema of one Personalize dataset CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub dataset: Dataset,
    pub fields: Vec<SchemaField>,
}

impl Schema {
    /// The CSV header row (without the line end).
    pub fn header(&self) -> String {
        let names: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
        names.join(",")
    }

    /// The schema as pretty-printed, deterministic JSON: one field a line.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\n");
        out.push_str("  \"type\": \"record\",\n");
        out.push_str(&format!(
            "  \"name\": \"{}\",\n",
            self.dataset.record_name()
        ));
        out.push_str("  \"namespace\": \"com.amazonaws.personalize.schema\",\n");
        out.push_str("  \"fields\": [\n");
        for (i, field) in self.fields.iter().enumerate() {
            let name = serde_json::to_string(&field.name).expect("a string serializes");
            let ty = if field.nullable {
                format!("[\"null\", \"{}\"]", field.ty.as_str())
            } else {
                format!("\"{}\"", field.ty.as_str())
            };
            out.push_str(&format!("    {{\"name\": {name}, \"type\": {ty}"));
            if field.categorical {
                out.push_str(", \"categorical\": true");
            }
            if field.textual {
                out.push_str(", \"textual\": true");
            }
            out.push('}');
            if i + 1 < self.fields.len() {
                out.push(',');
            }
            out.push('\n');
        }
        out.push_str("  ],\n");
        out.push_str("  \"version\": \"1.0\"\n");
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_deterministic_schema() {
        let schema = Schema {
            dataset: Dataset::Items,
            fields: vec![
                SchemaField {
                    name: "ITEM_ID".into(),
                    ty: AvroType::String,
                    nullable: false,
                    categorical: false,
                    textual: false,
                },
                SchemaField {
                    name: "GENRES".into(),
                    ty: AvroType::String,
                    nullable: true,
                    categorical: true,
                    textual: false,
                },
            ],
        };
        assert_eq!(
            schema.to_json(),
            "{\n  \"type\": \"record\",\n  \"name\": \"Items\",\n  \"namespace\": \"com.amazonaws.personalize.schema\",\n  \"fields\": [\n    {\"name\": \"ITEM_ID\", \"type\": \"string\"},\n    {\"name\": \"GENRES\", \"type\": [\"null\", \"string\"], \"categorical\": true}\n  ],\n  \"version\": \"1.0\"\n}\n"
        );
        assert_eq!(schema.header(), "ITEM_ID,GENRES");
    }

    #[test]
    fn matches_reserved_names_ignoring_case_and_punctuation() {
        let d = Dataset::Interactions;
        assert_eq!(d.reserved_named("userId").unwrap().name, "USER_ID");
        assert_eq!(d.reserved_named("event-value").unwrap().name, "EVENT_VALUE");
        assert!(d.reserved_named("ACTION_ID").is_none());
        assert_eq!(
            "action_interactions".parse::<Dataset>(),
            Ok(Dataset::ActionInteractions)
        );
    }
}
