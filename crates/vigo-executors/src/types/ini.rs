//! `ini`: one option (or a whole section) in an INI-style file — a line-for-line
//! port of community.general's `ini_file`, so an operator gets the file Ansible would
//! write: options are set in place, missing ones go after the last setting of their
//! section, missing sections are appended, comments and unrelated lines are kept.
//!
//! Deliberate differences: lines keep their own `\r\n` endings, a UTF-8 byte order
//! mark is only dropped when the file changes anyway, removing the global section
//! removes just the lines before the first header, and `value`s are strings or
//! integers (a YAML boolean or decimal would change spelling on the way).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use vigo_model::catalog::Lint;

use crate::executor::{ExecError, Executor};
use crate::types::file_line::{
    Presence, absolute_path, does_not_exist, eol_like, problem, refuse, split_lines, strip_eol, yes,
};

/// An option value: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer (quote booleans and decimals to keep their spelling)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

impl JsonSchema for Text {
    fn schema_name() -> Cow<'static, str> {
        "IniValue".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        let mut schema = serde_json::Map::new();
        schema.insert("type".into(), serde_json::json!(["string", "integer"]));
        Schema::from(schema)
    }
}

/// One option or section of an INI-style file (community.general `ini_file`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IniSpec {
    /// Absolute path of the INI file.
    #[serde(deserialize_with = "absolute_path")]
    #[schemars(with = "String")]
    path: PathBuf,
    /// The section (`[name]`, first one wins). Omitted or null: the global part before
    /// the first section header.
    #[serde(default)]
    section: Option<String>,
    /// The option name. Omit it to add an empty section (with `allow_no_value`) or to
    /// remove a whole section (`state: absent`).
    #[serde(default)]
    option: Option<String>,
    /// The option's value: a string or an integer (quote booleans and decimals).
    #[serde(default)]
    value: Option<Text>,
    /// Several values for an option that repeats (`opt = a`, `opt = b`); not with `value`.
    #[serde(default)]
    values: Option<Vec<Text>>,
    /// `present` (default) or `absent`.
    #[serde(default)]
    state: Presence,
    /// Present: replace or remove other lines of the option (default true). Absent:
    /// remove every line of the option rather than only those with the given value(s).
    #[serde(default = "yes")]
    exclusive: bool,
    /// Write `option=value` instead of `option = value`.
    #[serde(default)]
    no_extra_spaces: bool,
    /// Leave a line alone when only the spaces around `=` differ.
    #[serde(default)]
    ignore_spaces: bool,
    /// Create the file when it is missing (default true; mode 0644).
    #[serde(default = "yes")]
    create: bool,
    /// Allow an option without `=` and value (`skip-name-resolve`).
    #[serde(default)]
    allow_no_value: bool,
    /// Reuse a commented-out line of the option (`# opt = x`) for the setting (default true).
    #[serde(default = "yes")]
    modify_inactive_option: bool,
}

impl IniSpec {
    fn section(&self) -> Option<&str> {
        self.section.as_deref().filter(|s| !s.is_empty())
    }

    fn option(&self) -> Option<&str> {
        self.option.as_deref().filter(|o| !o.is_empty())
    }

    /// `value` as a one-element list, or `values` without duplicates.
    fn wanted_values(&self) -> Vec<String> {
        let all = self.value.iter().chain(self.values.iter().flatten());
        let mut unique: Vec<String> = Vec::new();
        for Text(v) in all {
            if !unique.contains(v) {
                unique.push(v.clone());
            }
        }
        unique
    }

    fn assignment(&self, option: &str, value: &str) -> String {
        if self.no_extra_spaces { format!("{option}={value}") } else { format!("{option} = {value}") }
    }
}

fn problems(spec: &IniSpec) -> Vec<Lint> {
    let mut found = Vec::new();
    if spec.value.is_some() && spec.values.is_some() {
        found.push(problem("values", "cannot be combined with `value`"));
    }
    let no_values = spec.value.is_none() && spec.values.as_ref().is_none_or(Vec::is_empty);
    if spec.state == Presence::Present && !spec.allow_no_value && no_values {
        found.push(problem("value", "is required with `state: present` unless `allow_no_value: true`"));
    }
    let one_line = |s: &str| !s.contains(['\n', '\r']);
    if !spec.section.as_deref().is_none_or(one_line) {
        found.push(problem("section", "must not contain a newline"));
    }
    if !spec.option.as_deref().is_none_or(one_line) {
        found.push(problem("option", "must not contain a newline"));
    }
    if !spec.wanted_values().iter().all(|v| one_line(v)) {
        found.push(problem(if spec.values.is_some() { "values" } else { "value" }, "must not contain a newline"));
    }
    found
}

/// Recognises lines that set one option, as `ini_file`'s `match_opt` and
/// `match_active_opt` do: `opt = value`, `opt=value`, `opt` alone, indented or not,
/// and (`any` only) commented out with `#` or `;`.
struct OptionLines {
    name: String,
    any: Regex,
    active: Regex,
}

/// What an option line says.
struct Setting {
    commented: bool,
    /// `=` present (a commented line without it is prose, not a setting).
    assigned: bool,
    value: String,
}

impl OptionLines {
    fn new(name: &str) -> Result<Self, regex::Error> {
        let name_re = regex::escape(name);
        let any = Regex::new(&format!(r"^[ \t]*([#;]?)[ \t]*{name_re}[ \t]*(=|$)[ \t]*(.*)"))?;
        let active = Regex::new(&format!(r"^[ \t]*(){name_re}[ \t]*(=|$)[ \t]*(.*)"))?;
        Ok(Self { name: name.to_string(), any, active })
    }

    fn find(&self, line: &str, inactive_too: bool) -> Option<Setting> {
        let regex = if inactive_too { &self.any } else { &self.active };
        let caps = regex.captures(strip_eol(line))?;
        let group = |i| caps.get(i).map_or("", |m| m.as_str());
        Some(Setting { commented: !group(1).is_empty(), assigned: !group(2).is_empty(), value: group(3).to_string() })
    }
}

/// The file's text after enforcing `spec` (`current` is `None` when the file is absent).
pub(crate) fn edit(current: Option<&str>, spec: &IniSpec) -> Result<Option<String>, ExecError> {
    refuse(&spec.path, problems(spec))?;
    let text = match current {
        Some(text) => text,
        None if spec.create => "",
        None => return Err(does_not_exist(&spec.path, "set `create: true` to create it")),
    };
    let option = match spec.option() {
        Some(name) => Some(
            OptionLines::new(name)
                .map_err(|e| ExecError::failed(format!("{}: `option` {name:?}: {e}", spec.path.display())))?,
        ),
        None => None,
    };
    let mut file = IniFile::read(text);
    file.enforce(spec, option.as_ref());
    Ok(if file.changed { Some(file.lines.concat()) } else { current.map(str::to_string) })
}

/// The file as `ini_file` sees it, and whether it has to be written.
struct IniFile {
    lines: Vec<String>,
    changed: bool,
}

impl IniFile {
    fn read(text: &str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines: Vec<String> = split_lines(text).into_iter().map(str::to_string).collect();
        let mut changed = false;
        match lines.last_mut() {
            // Ansible reads an empty file as one blank line; it shows up once anything is written.
            None => lines.push("\n".to_string()),
            Some(last) if !last.ends_with('\n') => {
                last.push('\n');
                changed = true;
            }
            Some(_) => {}
        }
        Self { lines, changed }
    }

    fn enforce(&mut self, spec: &IniSpec, option: Option<&OptionLines>) {
        let values = spec.wanted_values();
        let Some((header, body)) = locate(&self.lines, spec.section()) else {
            if spec.state == Presence::Present {
                self.add_section(spec, option, &values);
            }
            return;
        };
        let mut lines = self.lines[body.clone()].to_vec();
        match (spec.state, option) {
            (Presence::Present, Some(option)) => self.set_option(&mut lines, spec, option, values),
            (Presence::Present, None) => {}
            (Presence::Absent, Some(option)) => self.remove_option(&mut lines, spec, option, &values),
            (Presence::Absent, None) => {
                let from = header.unwrap_or(body.start);
                if from < body.end {
                    self.lines.drain(from..body.end);
                    self.changed = true;
                }
                return;
            }
        }
        self.lines.splice(body, lines);
    }

    /// `ini_file`'s four steps for `state: present`: rewrite lines that already carry a
    /// wanted value, (exclusive) reuse other lines of the option for the remaining
    /// values and delete the rest, then add what is still missing after the section's
    /// last setting.
    fn set_option(&mut self, lines: &mut Vec<String>, spec: &IniSpec, option: &OptionLines, mut values: Vec<String>) {
        let inactive = spec.modify_inactive_option;
        let name = option.name.as_str();
        let mut touched = vec![false; lines.len()];
        let mut bare_present = false;
        for i in 0..lines.len() {
            let Some(found) = option.find(&lines[i], inactive) else { continue };
            if let Some(pos) = values.iter().position(|v| *v == found.value) {
                let line = if found.value.is_empty() && spec.allow_no_value {
                    bare_present = true;
                    name.to_string()
                } else {
                    spec.assignment(name, &found.value)
                };
                self.update(lines, &mut touched, i, line, spec, option);
                values.remove(pos);
            } else if values.is_empty() && spec.allow_no_value {
                self.update(lines, &mut touched, i, name.to_string(), spec, option);
                bare_present = true;
                break;
            }
        }
        if spec.exclusive && !spec.allow_no_value {
            // A commented line without `=` is documentation that merely names the option.
            let setting = |line: &str| option.find(line, inactive).is_some_and(|f| !f.commented || f.assigned);
            for i in 0..lines.len() {
                if values.is_empty() {
                    break;
                }
                if !touched[i] && setting(&lines[i]) {
                    let value = values.remove(0);
                    self.update(lines, &mut touched, i, spec.assignment(name, &value), spec, option);
                }
            }
            for i in (0..lines.len()).rev() {
                if !touched[i] && setting(&lines[i]) {
                    lines.remove(i);
                    touched.remove(i);
                    self.changed = true;
                }
            }
        }
        let at = lines.iter().rposition(|l| !blank_or_comment(l)).map_or(0, |i| i + 1);
        if !values.is_empty() {
            let new = values.iter().map(|v| format!("{}\n", spec.assignment(name, v)));
            lines.splice(at..at, new);
            self.changed = true;
        } else if spec.allow_no_value && !bare_present {
            lines.insert(at, format!("{name}\n"));
            self.changed = true;
        }
    }

    /// Sets `lines[i]` to `line`, keeping the line ending; with `ignore_spaces`, an
    /// active line whose value is already right stays as written.
    fn update(
        &mut self,
        lines: &mut [String],
        touched: &mut [bool],
        i: usize,
        line: String,
        spec: &IniSpec,
        option: &OptionLines,
    ) {
        touched[i] = true;
        let old = &lines[i];
        let differs = match option.find(old, true) {
            Some(found) if spec.ignore_spaces && !found.commented => {
                option.find(&line, true).map(|f| f.value) != Some(found.value)
            }
            _ => strip_eol(old) != line,
        };
        if differs {
            lines[i] = format!("{line}{}", eol_like(old));
            self.changed = true;
        }
    }

    /// `state: absent` with an option: every active line of it (exclusive), or those
    /// with one of the given values. Commented-out lines are never removed.
    fn remove_option(&mut self, lines: &mut Vec<String>, spec: &IniSpec, option: &OptionLines, values: &[String]) {
        let before = lines.len();
        if spec.exclusive {
            lines.retain(|l| option.find(l, false).is_none());
        } else if !values.is_empty() {
            lines.retain(|l| !option.find(l, false).is_some_and(|f| values.contains(&f.value)));
        }
        self.changed |= lines.len() != before;
    }

    /// A missing section goes at the end of the file, with the option if there is one.
    fn add_section(&mut self, spec: &IniSpec, option: Option<&OptionLines>, values: &[String]) {
        let Some(section) = spec.section.as_deref() else { return };
        self.lines.push(format!("[{section}]\n"));
        if let Some(option) = option {
            if !values.is_empty() {
                self.lines.extend(values.iter().map(|v| format!("{}\n", spec.assignment(&option.name, v))));
            } else if spec.allow_no_value {
                self.lines.push(format!("{}\n", option.name));
            }
        }
        self.changed = true;
    }
}

/// The section's header line (none for the global part) and the range of its body,
/// which ends at the next line starting with `[`. The first matching header wins.
fn locate(lines: &[String], section: Option<&str>) -> Option<(Option<usize>, Range<usize>)> {
    let header_like = |l: &String| l.starts_with('[');
    let Some(name) = section else {
        return Some((None, 0..lines.iter().position(header_like).unwrap_or(lines.len())));
    };
    let name = name.trim();
    let is_header = |l: &String| {
        l.strip_prefix('[')
            .and_then(|rest| rest.trim_start().strip_prefix(name))
            .is_some_and(|rest| rest.trim_start().starts_with(']'))
    };
    let start = lines.iter().position(is_header)?;
    let end = lines[start + 1..].iter().position(header_like).map_or(lines.len(), |i| start + 1 + i);
    Some((Some(start), start + 1..end))
}

/// Blank or comment-only: new settings go after the last line that is neither.
fn blank_or_comment(line: &str) -> bool {
    let text = strip_eol(line).trim_start_matches([' ', '\t']);
    text.is_empty() || text.starts_with(['#', ';'])
}

/// community.general's `ini_file` module.
pub struct Ini;

impl Executor for Ini {
    type Spec = IniSpec;

    const NAME: &'static str = "ini";
    const SUMMARY: &'static str = "One option or section in an INI-style file (Ansible's ini_file)";
    const EXAMPLE: &'static str = r#"
- name: php-memory-limit
  type: ini
  path: /etc/php/8.2/fpm/php.ini
  section: PHP
  option: memory_limit
  value: 256M
- name: mysqld-skip-name-resolve
  type: ini
  path: /etc/mysql/conf.d/local.cnf
  section: mysqld
  option: skip-name-resolve
  allow_no_value: true
- name: pip-extra-indexes
  type: ini
  path: /etc/pip.conf
  section: global
  option: extra-index-url
  values:
    - https://pypi.example.com/simple
    - https://mirror.example.com/simple
- name: no-legacy-section
  type: ini
  path: /etc/app.ini
  section: legacy
  state: absent
"#;

    crate::text_editor_methods!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::World;
    use crate::executor::{Mode, parse_spec};
    use crate::types::file_line::testing::{Case, Row, converge_table, edit_table};

    fn row(
        name: &'static str,
        input: Option<&'static str>,
        spec: &'static str,
        want: Result<Option<&'static str>, &'static str>,
    ) -> Row {
        Row { name, input, spec, want }
    }

    const MYSQLD: &str = "\n[mysqld]\nskip-name\nskip-name-resolve\nmax_connections = 500\n";
    const DRINKS: &str = "[drinks]\nfav = cocktail\nbeverage = water\nfav = lemonade\nbeverage = orange juice\n";

    /// Most rows come from community.general's ini_file integration tests, so the
    /// expected texts are what Ansible writes (quirks included, such as the blank first
    /// line of a file the module creates).
    #[test]
    fn edits_like_ansible_ini_file() {
        let rows = [
            // Creating and extending (tests/01-value.yml).
            row(
                "new file gets section and option",
                None,
                "section: drinks\noption: fav\nvalue: lemonade",
                Ok(Some("\n[drinks]\nfav = lemonade\n")),
            ),
            row(
                "option added to its section",
                Some("\n[drinks]\nfav = lemonade\n"),
                "section: drinks\noption: beverage\nvalue: coke",
                Ok(Some("\n[drinks]\nfav = lemonade\nbeverage = coke\n")),
            ),
            row(
                "option removed",
                Some("\n[drinks]\nfav = lemonade\nbeverage = coke\n"),
                "section: drinks\noption: beverage\nstate: absent",
                Ok(Some("\n[drinks]\nfav = lemonade\n")),
            ),
            row(
                "section removed",
                Some("\n[drinks]\nfav = lemonade\n"),
                "section: drinks\nstate: absent",
                Ok(Some("\n")),
            ),
            row(
                "allow_no_value adds a bare option",
                None,
                "section: mysqld\noption: skip-name\nallow_no_value: true",
                Ok(Some("\n[mysqld]\nskip-name\n")),
            ),
            row(
                "empty section with allow_no_value",
                Some("a = 1\n"),
                "section: new_empty_section\nallow_no_value: true",
                Ok(Some("a = 1\n[new_empty_section]\n")),
            ),
            row(
                "bare option gets a value",
                Some(MYSQLD),
                "section: mysqld\noption: skip-name\nvalue: myvalue",
                Ok(Some("\n[mysqld]\nskip-name = myvalue\nskip-name-resolve\nmax_connections = 500\n")),
            ),
            row(
                "value becomes a bare option",
                Some("\n[mysqld]\nskip-name = myvalue\nskip-name-resolve\nmax_connections = 500\n"),
                "section: mysqld\noption: skip-name\nallow_no_value: true",
                Ok(Some(MYSQLD)),
            ),
            row(
                "global option in an empty file",
                Some(""),
                "option: beverage\nvalue: coke",
                Ok(Some("beverage = coke\n\n")),
            ),
            row(
                "global option changed",
                Some("beverage = coke\n\n"),
                "option: beverage\nvalue: water",
                Ok(Some("beverage = water\n\n")),
            ),
            row(
                "global option removed",
                Some("beverage = water\n\n"),
                "option: beverage\nstate: absent",
                Ok(Some("\n")),
            ),
            row(
                "global option goes before the first section",
                Some("\n[drinks]\nbeverage = water\n"),
                "option: like\nvalue: tea",
                Ok(Some("like = tea\n\n[drinks]\nbeverage = water\n")),
            ),
            row(
                "empty value",
                Some("\n"),
                "section: extensions\noption: evolve\nvalue: ''",
                Ok(Some("\n[extensions]\nevolve = \n")),
            ),
            row(
                "byte order mark is dropped on write",
                Some("\u{feff}[section1]\nvar1=aaa\nvar2=bbb\n[section2]\nvar3=ccc\n"),
                "section: section1\noption: var4\nvalue: 0",
                Ok(Some("[section1]\nvar1=aaa\nvar2=bbb\nvar4 = 0\n[section2]\nvar3=ccc\n")),
            ),
            // Several values (tests/02-values.yml).
            row(
                "values in a new section",
                None,
                "section: drinks\noption: fav\nvalues: [lemonade, cocktail]",
                Ok(Some("\n[drinks]\nfav = lemonade\nfav = cocktail\n")),
            ),
            row(
                "non-exclusive absent removes one value",
                Some("\n[drinks]\nfav = lemonade\nfav = cocktail\n"),
                "section: drinks\noption: fav\nvalues: [lemonade]\nstate: absent\nexclusive: false",
                Ok(Some("\n[drinks]\nfav = cocktail\n")),
            ),
            row(
                "non-exclusive present adds one value",
                Some("\n[drinks]\nfav = cocktail\n"),
                "section: drinks\noption: fav\nvalues: [lemonade]\nexclusive: false",
                Ok(Some("\n[drinks]\nfav = cocktail\nfav = lemonade\n")),
            ),
            row(
                "values in another order are in sync",
                Some("\n[drinks]\nfav = cocktail\nfav = lemonade\n"),
                "section: drinks\noption: fav\nvalues: [lemonade, cocktail]",
                Ok(Some("\n[drinks]\nfav = cocktail\nfav = lemonade\n")),
            ),
            row(
                "exclusive drops values not asked for",
                Some("\n[drinks]\nfav = cocktail\nfav = lemonade\n"),
                "section: drinks\noption: fav\nvalues: [lemonade]",
                Ok(Some("\n[drinks]\nfav = lemonade\n")),
            ),
            row(
                "duplicate values collapse",
                None,
                "section: drinks\noption: r\nvalues: [water, juice, water]",
                Ok(Some("\n[drinks]\nr = water\nr = juice\n")),
            ),
            row(
                "exclusive values reuse existing lines",
                Some("beverage = coke\nbeverage = pepsi\n\n"),
                "option: beverage\nvalues: [water, orange juice]",
                Ok(Some("beverage = water\nbeverage = orange juice\n\n")),
            ),
            row(
                "absent exclusive removes every line of the option",
                Some(DRINKS),
                "section: drinks\noption: fav\nvalues: [cocktail]\nstate: absent",
                Ok(Some("[drinks]\nbeverage = water\nbeverage = orange juice\n")),
            ),
            row(
                "absent non-exclusive removes only the value",
                Some(DRINKS),
                "section: drinks\noption: fav\nvalues: [cocktail]\nstate: absent\nexclusive: false",
                Ok(Some("[drinks]\nbeverage = water\nfav = lemonade\nbeverage = orange juice\n")),
            ),
            row(
                "absent non-exclusive without values changes nothing",
                Some(DRINKS),
                "section: drinks\noption: fav\nstate: absent\nexclusive: false",
                Ok(Some(DRINKS)),
            ),
            // Commented-out options (tests/06-modify_inactive_option.yml).
            row(
                "commented option is reused",
                Some("\n[section1]\n# Uncomment the line below to enable foo\n# foo = bar\n\n"),
                "section: section1\noption: foo\nvalue: bar",
                Ok(Some("\n[section1]\n# Uncomment the line below to enable foo\nfoo = bar\n\n")),
            ),
            row(
                "modify_inactive_option false keeps the comment",
                Some("\n[section1]\n# Uncomment the line below to enable foo\n# foo = bar\n\n"),
                "section: section1\noption: foo\nvalue: bar\nmodify_inactive_option: false",
                Ok(Some("\n[section1]\nfoo = bar\n# Uncomment the line below to enable foo\n# foo = bar\n\n")),
            ),
            row(
                "absent leaves commented options",
                Some("\n[section1]\n# foo = bar\nfoo = bar\n"),
                "section: section1\noption: foo\nvalue: bar\nstate: absent",
                Ok(Some("\n[section1]\n# foo = bar\n")),
            ),
            row(
                "indented comment is reused",
                Some("[section1]\n  # foo = bar\n"),
                "section: section1\noption: foo\nvalue: bar",
                Ok(Some("[section1]\nfoo = bar\n")),
            ),
            row(
                "prose naming the option survives exclusive cleanup",
                Some("[PHP]\n; output_buffering\n;output_buffering = 4096\n"),
                "section: PHP\noption: output_buffering\nvalue: '123'",
                Ok(Some("[PHP]\n; output_buffering\noutput_buffering = 123\n")),
            ),
            // Placement, spacing and layout.
            row(
                "new option goes after the last setting, before blanks and comments",
                Some("[a]\nx = 1\n\n# about b\n[b]\ny = 2\n"),
                "section: a\noption: z\nvalue: '3'",
                Ok(Some("[a]\nx = 1\nz = 3\n\n# about b\n[b]\ny = 2\n")),
            ),
            row(
                "option in a later section",
                Some("[a]\nx = 1\n[b]\nport = 2\n"),
                "section: b\noption: port\nvalue: '5'",
                Ok(Some("[a]\nx = 1\n[b]\nport = 5\n")),
            ),
            row(
                "spaces inside the header",
                Some("[ drinks ]\nfav = x\n"),
                "section: drinks\noption: fav\nvalue: new",
                Ok(Some("[ drinks ]\nfav = new\n")),
            ),
            row(
                "section name is not a prefix match",
                Some("[drinksmore]\n"),
                "section: drinks\noption: a\nvalue: b",
                Ok(Some("[drinksmore]\n[drinks]\na = b\n")),
            ),
            row(
                "option name is not a prefix match",
                Some("[s]\nfoobar = 1\n"),
                "section: s\noption: foo\nvalue: '2'",
                Ok(Some("[s]\nfoobar = 1\nfoo = 2\n")),
            ),
            row(
                "no_extra_spaces",
                Some("[s]\na = 1\n"),
                "section: s\noption: a\nvalue: '2'\nno_extra_spaces: true",
                Ok(Some("[s]\na=2\n")),
            ),
            row(
                "spacing is normalised",
                Some("[s]\na=1\n"),
                "section: s\noption: a\nvalue: '1'",
                Ok(Some("[s]\na = 1\n")),
            ),
            row(
                "ignore_spaces keeps the line",
                Some("[s]\na=1\n"),
                "section: s\noption: a\nvalue: '1'\nignore_spaces: true",
                Ok(Some("[s]\na=1\n")),
            ),
            row(
                "first of duplicate sections wins",
                Some("[s]\na = 1\n[s]\na = 1\n"),
                "section: s\noption: a\nvalue: '2'",
                Ok(Some("[s]\na = 2\n[s]\na = 1\n")),
            ),
            row(
                "missing final newline is added",
                Some("[s]\na = 1"),
                "section: s\noption: a\nvalue: '1'",
                Ok(Some("[s]\na = 1\n")),
            ),
            row(
                "crlf lines keep their endings",
                Some("[s]\r\na = 1\r\nb = 2\r\n"),
                "section: s\noption: a\nvalue: '3'",
                Ok(Some("[s]\r\na = 3\r\nb = 2\r\n")),
            ),
            row("empty file with nothing to do stays empty", Some(""), "option: a\nstate: absent", Ok(Some(""))),
            row("absent on a missing file", None, "section: s\nstate: absent", Ok(None)),
            row(
                "create false",
                None,
                "section: s\noption: a\nvalue: b\ncreate: false",
                Err("does not exist (set `create: true`"),
            ),
            row("value is required", Some(""), "section: s\noption: a", Err("`value` is required")),
            row(
                "value and values together",
                Some(""),
                "section: s\noption: a\nvalue: b\nvalues: [c]",
                Err("`values` cannot be combined"),
            ),
        ];
        edit_table::<Ini>(&rows, edit);
    }

    #[test]
    fn converges_real_files() {
        converge_table::<Ini>(&[
            Case {
                name: "create",
                initial: None,
                spec: "section: s\noption: a\nvalue: '1'",
                changes: &["ensure"],
                after: Some("\n[s]\na = 1\n"),
            },
            Case {
                name: "change",
                initial: Some("# top\n[s]\na = 0\n"),
                spec: "section: s\noption: a\nvalue: '1'",
                changes: &["content"],
                after: Some("# top\n[s]\na = 1\n"),
            },
            Case {
                name: "already correct",
                initial: Some("[s]\na = 1\n"),
                spec: "section: s\noption: a\nvalue: '1'",
                changes: &[],
                after: Some("[s]\na = 1\n"),
            },
            Case {
                name: "remove section",
                initial: Some("[s]\na = 1\n[t]\nb = 2\n"),
                spec: "section: s\nstate: absent",
                changes: &["content"],
                after: Some("[t]\nb = 2\n"),
            },
            Case {
                name: "absent file stays absent",
                initial: None,
                spec: "section: s\nstate: absent",
                changes: &[],
                after: None,
            },
        ]);
    }

    #[test]
    fn missing_file_without_create_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nope.ini");
        let spec =
            crate::conformance::spec::<Ini>(&format!("path: {}\noption: a\nvalue: b\ncreate: false", path.display()));
        let err = Ini::check(&spec, &World::default().ctx(Mode::NoOp)).expect_err("must fail");
        assert!(err.to_string().starts_with(&format!("{}: does not exist", path.display())), "{err}");
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bin.ini");
        std::fs::write(&path, b"[s]\na = \xff\n").expect("write");
        let spec = crate::conformance::spec::<Ini>(&format!("path: {}\noption: a\nvalue: b", path.display()));
        let err = Ini::check(&spec, &World::default().ctx(Mode::NoOp)).expect_err("must fail");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn values_are_strings_or_integers() {
        let parsed: IniSpec =
            parse_spec(&serde_json::json!({"path": "/etc/a.ini", "option": "n", "values": ["x", 500]}))
                .expect("parses");
        assert_eq!(parsed.wanted_values(), ["x", "500"]);
        for bad in [serde_json::json!(true), serde_json::json!(1.10)] {
            let err = parse_spec::<IniSpec>(&serde_json::json!({"path": "/etc/a.ini", "option": "n", "value": bad}))
                .expect_err("ambiguous scalar");
            assert_eq!(err.field.as_deref(), Some("value"));
            assert!(err.message.contains("quote booleans and decimals"), "{}", err.message);
        }
    }

    #[test]
    fn lint_names_the_missing_value() {
        let spec = crate::conformance::spec::<Ini>("path: /etc/a.ini\nsection: s\noption: a");
        let lints = Ini::lint(&spec, vigo_model::catalog::Common { name: "t", when: None });
        let fields: Vec<_> = lints.iter().filter_map(|l| l.field.as_deref()).collect();
        assert_eq!(fields, ["value"]);
    }
}
