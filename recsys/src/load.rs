//! Reading and writing `DATA_FILE`: [JSON Lines](https://jsonlines.org/), one record per line, each an object
//! whose `type` says what it is (the format is described with examples in the crate docs).
//!
//! Reading is all or nothing: the first bad line stops it with a [`LoadError`] naming the file, the line and the
//! problem, and no data set is returned. Lines are read with a bound ([`Limits::max_line_bytes`]) so a file without
//! line breaks cannot exhaust memory, and the numbers of items, users and interactions are bounded too.
//!
//! Items may come before or after the interactions that refer to them. An id that no line defines is reported once
//! the whole file is read, at the first line that refers to it.

use std::{
    borrow::Cow,
    fmt,
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Read, Write},
    path::Path,
};

use foldhash::HashMap;
use serde::{Deserialize, Serialize};

use crate::{
    catalog::{CatalogBuilder, CatalogError, Item, ItemIdx},
    dataset::{DataSet, Interaction, Limits, Users},
    validate::{self, FieldError},
};

/// Why `DATA_FILE` was refused: where, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    /// The file, as named to the loader.
    pub file: String,
    /// The line (counting from 1), when the problem is on one.
    pub line: Option<u64>,
    /// What is wrong.
    #[source]
    pub kind: LoadErrorKind,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.kind),
            None => write!(f, "{}: {}", self.file, self.kind),
        }
    }
}

/// What is wrong with `DATA_FILE`.
#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    /// The file cannot be opened or read.
    #[error("cannot read the file: {0}")]
    Io(#[source] io::Error),
    /// A line longer than [`Limits::max_line_bytes`].
    #[error("the line is longer than {max} bytes")]
    LineTooLong {
        /// The bound.
        max: usize,
    },
    /// Not a JSON object of the expected shape (syntax, a field of the wrong type, an unknown field, bad UTF-8).
    #[error("invalid record at column {column}: {message}")]
    Json {
        /// Where on the line the parser gave up (counting from 1).
        column: usize,
        /// The parser's explanation.
        message: String,
    },
    /// A `type` other than `item` and `interaction`.
    #[error("unknown record type `{0}` (expected `item` or `interaction`)")]
    UnknownType(String),
    /// A record without one of its fields.
    #[error("{record} records need `{field}`")]
    Missing {
        /// `item` or `interaction`.
        record: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A field of the other record type (say `weight` on an item), which is almost always a mix-up.
    #[error("`{field}` does not belong in {record} records")]
    Unexpected {
        /// `item` or `interaction`.
        record: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A field that breaks its rule.
    #[error("`{field}` {error}")]
    Field {
        /// The field.
        field: &'static str,
        /// The rule broken.
        error: FieldError,
    },
    /// An item id defined on two lines.
    #[error("item `{id}` is defined twice (first on line {first_line})")]
    DuplicateItem {
        /// The id.
        id: String,
        /// Where it was defined first.
        first_line: u64,
    },
    /// An interaction with an item that no line defines.
    #[error("item `{id}` is not defined anywhere in the file")]
    UnknownItem {
        /// The id.
        id: String,
    },
    /// More of something than [`Limits`] allow.
    #[error("more than {max} {what}")]
    TooMany {
        /// `items`, `users` or `interactions`.
        what: &'static str,
        /// The bound.
        max: usize,
    },
    /// A file without any item (an empty file, say): nothing could ever be recommended.
    #[error("the file defines no item")]
    NoItems,
}

/// Reads `DATA_FILE` with the default [`Limits`].
pub fn load(path: impl AsRef<Path>) -> Result<DataSet, LoadError> {
    load_with(path, &Limits::default())
}

/// Reads `DATA_FILE` within `limits`.
pub fn load_with(path: impl AsRef<Path>, limits: &Limits) -> Result<DataSet, LoadError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let file =
        File::open(path).map_err(|err| LoadError { file: name.clone(), line: None, kind: LoadErrorKind::Io(err) })?;
    read(BufReader::with_capacity(1 << 16, file), &name, limits)
}

/// Reads the `DATA_FILE` format from `reader`; `name` is how errors name the source.
pub fn read(mut reader: impl BufRead, name: &str, limits: &Limits) -> Result<DataSet, LoadError> {
    let mut loader = Loader::new(limits);
    let mut buffer = Vec::with_capacity(512);
    let mut line = 0;
    let at = |line, kind| LoadError { file: name.to_owned(), line: Some(line), kind };
    loop {
        buffer.clear();
        // Room for the longest allowed line and its "\r\n": anything longer is refused without reading it whole.
        let bound = (limits.max_line_bytes as u64).saturating_add(2);
        let read = (&mut reader)
            .take(bound)
            .read_until(b'\n', &mut buffer)
            .map_err(|err| at(line + 1, LoadErrorKind::Io(err)))?;
        if read == 0 {
            break;
        }
        line += 1;
        let content = buffer.strip_suffix(b"\n").unwrap_or(&buffer);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.len() > limits.max_line_bytes {
            return Err(at(line, LoadErrorKind::LineTooLong { max: limits.max_line_bytes }));
        }
        if content.trim_ascii().is_empty() {
            continue;
        }
        loader.line(content, line).map_err(|kind| at(line, kind))?;
    }
    loader.finish().map_err(|(line, kind)| LoadError { file: name.to_owned(), line, kind })
}

/// One line as parsed, before it is checked against its record type. Strings are borrowed from the line when they
/// have no escapes, so reading a million lines allocates only for what is kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    title: Option<Cow<'a, str>>,
    #[serde(borrow)]
    category: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    item: Option<Cow<'a, str>>,
    weight: Option<f64>,
    time: Option<u64>,
}

/// The records as written: `{"type":"item",...}` and `{"type":"interaction",...}`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RecordOut<'a> {
    Item { id: &'a str, title: &'a str, category: &'a str },
    Interaction { user: &'a str, item: &'a str, weight: f32, time: u64 },
}

/// An item id referred to before any line defined it.
struct Pending {
    id: String,
    first_line: u64,
    interactions: Vec<u32>,
}

/// Marks an interaction whose item is still [`Pending`].
const UNRESOLVED: ItemIdx = ItemIdx(u32::MAX);

struct Loader {
    limits: Limits,
    catalog: CatalogBuilder,
    item_lines: Vec<u64>,
    users: Users,
    interactions: Vec<Interaction>,
    pending: Vec<Pending>,
    pending_by_id: HashMap<String, usize>,
}

fn required<T>(value: Option<T>, record: &'static str, field: &'static str) -> Result<T, LoadErrorKind> {
    value.ok_or(LoadErrorKind::Missing { record, field })
}

fn absent<T>(value: &Option<T>, record: &'static str, field: &'static str) -> Result<(), LoadErrorKind> {
    match value {
        Some(_) => Err(LoadErrorKind::Unexpected { record, field }),
        None => Ok(()),
    }
}

fn checked(field: &'static str, result: Result<(), FieldError>) -> Result<(), LoadErrorKind> {
    result.map_err(|error| LoadErrorKind::Field { field, error })
}

fn json_error(err: &serde_json::Error) -> LoadErrorKind {
    // serde_json appends " at line L column C"; the line is always 1 here and the column is reported on its own.
    let message = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
    LoadErrorKind::Json { column: err.column(), message }
}

impl Loader {
    fn new(limits: &Limits) -> Self {
        // Items, users and interactions are addressed by u32 indices, whatever the limits say.
        let index = |limit: usize| limit.min(u32::MAX as usize);
        Self {
            limits: Limits {
                max_items: index(limits.max_items),
                max_users: index(limits.max_users),
                max_interactions: index(limits.max_interactions),
                ..*limits
            },
            catalog: CatalogBuilder::default(),
            item_lines: Vec::new(),
            users: Users::default(),
            interactions: Vec::new(),
            pending: Vec::new(),
            pending_by_id: HashMap::default(),
        }
    }

    fn line(&mut self, content: &[u8], line: u64) -> Result<(), LoadErrorKind> {
        let raw: RawRecord = serde_json::from_slice(content).map_err(|err| json_error(&err))?;
        match &*raw.kind {
            "item" => self.item(raw, line),
            "interaction" => self.interaction(raw, line),
            other => Err(LoadErrorKind::UnknownType(other.to_owned())),
        }
    }

    fn item(&mut self, raw: RawRecord, line: u64) -> Result<(), LoadErrorKind> {
        const RECORD: &str = "item";
        let id = required(raw.id, RECORD, "id")?;
        let title = required(raw.title, RECORD, "title")?;
        let category = required(raw.category, RECORD, "category")?;
        absent(&raw.user, RECORD, "user")?;
        absent(&raw.item, RECORD, "item")?;
        absent(&raw.weight, RECORD, "weight")?;
        absent(&raw.time, RECORD, "time")?;
        if self.catalog.len() >= self.limits.max_items {
            return Err(LoadErrorKind::TooMany { what: "items", max: self.limits.max_items });
        }
        let item = Item { id: id.into_owned(), title: title.into_owned(), category: category.into_owned() };
        match self.catalog.push(item) {
            Ok(_) => {
                self.item_lines.push(line);
                Ok(())
            }
            Err(CatalogError::Field { field, error }) => Err(LoadErrorKind::Field { field, error }),
            Err(CatalogError::Duplicate { id, first }) => {
                Err(LoadErrorKind::DuplicateItem { id, first_line: self.item_lines[first.index()] })
            }
            Err(CatalogError::Full) => Err(LoadErrorKind::TooMany { what: "items", max: self.limits.max_items }),
        }
    }

    fn interaction(&mut self, raw: RawRecord, line: u64) -> Result<(), LoadErrorKind> {
        const RECORD: &str = "interaction";
        let user = required(raw.user, RECORD, "user")?;
        let item = required(raw.item, RECORD, "item")?;
        let weight = required(raw.weight, RECORD, "weight")?;
        let time = required(raw.time, RECORD, "time")?;
        absent(&raw.id, RECORD, "id")?;
        absent(&raw.title, RECORD, "title")?;
        absent(&raw.category, RECORD, "category")?;
        checked("user", validate::id(&user))?;
        checked("item", validate::id(&item))?;
        checked("weight", validate::weight(weight))?;
        checked("time", validate::time(time))?;
        if self.interactions.len() >= self.limits.max_interactions {
            return Err(LoadErrorKind::TooMany { what: "interactions", max: self.limits.max_interactions });
        }
        if self.users.find(&user).is_none() && self.users.len() >= self.limits.max_users {
            return Err(LoadErrorKind::TooMany { what: "users", max: self.limits.max_users });
        }
        let position = self.interactions.len() as u32;
        let item = match self.catalog.get(&item) {
            Some(idx) => idx,
            None => {
                let pending = *self.pending_by_id.entry(item.clone().into_owned()).or_insert_with(|| {
                    self.pending.push(Pending { id: item.into_owned(), first_line: line, interactions: Vec::new() });
                    self.pending.len() - 1
                });
                self.pending[pending].interactions.push(position);
                UNRESOLVED
            }
        };
        let user = self.users.intern(&user);
        // Checked above to be at most MAX_WEIGHT, which an f32 holds.
        self.interactions.push(Interaction { user, item, weight: weight as f32, time });
        Ok(())
    }

    fn finish(mut self) -> Result<DataSet, (Option<u64>, LoadErrorKind)> {
        if self.catalog.is_empty() {
            return Err((None, LoadErrorKind::NoItems));
        }
        // In order of first reference, so the error names the earliest line that refers to an undefined id.
        for pending in &self.pending {
            let Some(idx) = self.catalog.get(&pending.id) else {
                return Err((Some(pending.first_line), LoadErrorKind::UnknownItem { id: pending.id.clone() }));
            };
            for &position in &pending.interactions {
                self.interactions[position as usize].item = idx;
            }
        }
        Ok(DataSet::from_parts(self.catalog.build(), self.users, self.interactions))
    }
}

/// Writes `dataset` in the `DATA_FILE` format: the items in catalog order, then the interactions oldest first.
pub fn write(dataset: &DataSet, out: impl Write) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let mut record = |record: RecordOut| -> io::Result<()> {
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")
    };
    for item in dataset.catalog().items() {
        record(RecordOut::Item { id: &item.id, title: &item.title, category: &item.category })?;
    }
    for interaction in dataset.interactions() {
        record(RecordOut::Interaction {
            user: dataset.users().id(interaction.user),
            item: &dataset.catalog().item(interaction.item).id,
            weight: interaction.weight,
            time: interaction.time,
        })?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEMS: &str = r#"{"type":"item","id":"b1","title":"Quiet Harbor","category":"books"}
{"type":"item","id":"m1","title":"Ember Sessions","category":"music"}
"#;

    fn parse(text: &str) -> Result<DataSet, LoadError> {
        read(text.as_bytes(), "data.jsonl", &Limits::default())
    }

    /// The error message for `text`, which must be refused.
    fn refused(text: &str) -> String {
        parse(text).expect_err("the file must be refused").to_string()
    }

    fn interaction(user: &str, item: &str, weight: &str, time: u64) -> String {
        format!(r#"{{"type":"interaction","user":"{user}","item":"{item}","weight":{weight},"time":{time}}}"#)
    }

    #[test]
    fn reads_items_and_interactions_in_any_order() {
        let text = format!(
            "{}\n\n{}\r\n{ITEMS}{}",
            interaction("u1", "m1", "2", 20),
            interaction("u2", "b1", "1.5", 10),
            interaction("u1", "b1", "1", 30)
        );
        let data = parse(&text).unwrap();
        assert_eq!(data.catalog().len(), 2);
        assert_eq!(data.users().len(), 2);
        let rows: Vec<_> = data
            .interactions()
            .iter()
            .map(|i| (data.users().id(i.user), data.catalog().item(i.item).id.as_str(), i.weight, i.time))
            .collect();
        assert_eq!(rows, [("u2", "b1", 1.5, 10), ("u1", "m1", 2.0, 20), ("u1", "b1", 1.0, 30)], "sorted by time");
    }

    #[test]
    fn bad_lines_are_named_by_file_and_line() {
        let cases = [
            ("{\"type\":\"item\",", "data.jsonl:3: invalid record at column 15: EOF while parsing a value"),
            (
                r#"{"type":"song","id":"x"}"#,
                "data.jsonl:3: unknown record type `song` (expected `item` or `interaction`)",
            ),
            (r#"{"id":"x"}"#, "data.jsonl:3: invalid record at column 10: missing field `type`"),
            (
                r#"{"type":"item","id":"x","title":"T","category":"c","wieght":1}"#,
                "data.jsonl:3: invalid record at column 59: unknown field `wieght`, expected one of `type`, `id`, \
                 `title`, `category`, `user`, `item`, `weight`, `time`",
            ),
            (r#"{"type":"item","id":"x","category":"c"}"#, "data.jsonl:3: item records need `title`"),
            (
                r#"{"type":"item","id":"x","title":"T","category":"c","weight":1}"#,
                "data.jsonl:3: `weight` does not belong in item records",
            ),
            (
                r#"{"type":"item","id":"x y","title":"T","category":"c"}"#,
                "data.jsonl:3: `id` must match ^[A-Za-z0-9._-]{1,64}$",
            ),
            (r#"{"type":"item","id":"x","title":" ","category":"c"}"#, "data.jsonl:3: `title` must not be empty"),
            (
                r#"{"type":"item","id":"m1","title":"Again","category":"music"}"#,
                "data.jsonl:3: item `m1` is defined twice (first on line 2)",
            ),
            (&interaction("u1", "b1", "0", 1), "data.jsonl:3: `weight` must be greater than 0"),
            (&interaction("u1", "b1", "-2", 1), "data.jsonl:3: `weight` must be greater than 0"),
            (&interaction("u1", "b1", "1e9", 1), "data.jsonl:3: `weight` must be at most 1000"),
            (&interaction("u1", "b1", "1e999", 1), "data.jsonl:3: invalid record at column 60: number out of range"),
            (&interaction("u1", "b1", "NaN", 1), "data.jsonl:3: invalid record at column 56: expected value"),
            (
                &interaction("u1", "b1", "\"1\"", 1),
                "data.jsonl:3: invalid record at column 58: invalid type: string \"1\", expected f64",
            ),
            (&interaction("", "b1", "1", 1), "data.jsonl:3: `user` must match ^[A-Za-z0-9._-]{1,64}$"),
            (
                &interaction("u1", "b1", "1", 1_700_000_000_000),
                "data.jsonl:3: `time` must be at most 253402300799 (seconds since 1970; is it in milliseconds?)",
            ),
            (
                r#"{"type":"interaction","user":"u1","item":"b1","weight":1}"#,
                "data.jsonl:3: interaction records need `time`",
            ),
        ];
        let (lines, expected): (Vec<&str>, Vec<&str>) = cases.into_iter().unzip();
        let actual: Vec<String> = lines.iter().map(|line| refused(&format!("{ITEMS}{line}\n"))).collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn an_undefined_item_is_reported_where_first_used() {
        let text = format!(
            "{}\n{ITEMS}{}\n{}\n",
            interaction("u1", "b1", "1", 1),
            interaction("u1", "nope", "1", 2),
            interaction("u2", "nope", "1", 3)
        );
        assert_eq!(refused(&text), "data.jsonl:4: item `nope` is not defined anywhere in the file");
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let mut bytes = ITEMS.as_bytes().to_vec();
        bytes.extend_from_slice(b"{\"type\":\"item\",\"id\":\"x\",\"title\":\"\xff\",\"category\":\"c\"}\n");
        let err = read(&bytes[..], "data.jsonl", &Limits::default()).unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.to_string().contains("invalid unicode"), "{err}");
    }

    #[test]
    fn oversize_lines_are_refused_without_reading_them_whole() {
        let limits = Limits { max_line_bytes: 80, ..Limits::default() };
        let long = format!(r#"{{"type":"item","id":"x","title":"{}","category":"c"}}"#, "t".repeat(100));
        let mut reader = format!("{ITEMS}{long}\n").into_bytes();
        let err = read(&reader[..], "data.jsonl", &limits).unwrap_err();
        assert_eq!(err.to_string(), "data.jsonl:3: the line is longer than 80 bytes");
        // A line of exactly the bound, even with a Windows line break, is fine.
        let longest = interaction("a-user-with-a-long-id-000000000000000", "b1", "1", 1);
        reader = format!("{ITEMS}{longest}\r\n").into_bytes();
        let exact = Limits { max_line_bytes: longest.len(), ..limits };
        assert!(read(&reader[..], "data.jsonl", &exact).is_ok());
        let short = Limits { max_line_bytes: exact.max_line_bytes - 1, ..limits };
        assert!(read(&reader[..], "data.jsonl", &short).is_err());
    }

    #[test]
    fn sizes_are_bounded() {
        let tight = Limits { max_items: 1, max_users: 1, max_interactions: 1, ..Limits::default() };
        let err = read(ITEMS.as_bytes(), "d", &tight).unwrap_err();
        assert_eq!(err.to_string(), "d:2: more than 1 items");
        let one_item = "{\"type\":\"item\",\"id\":\"b1\",\"title\":\"T\",\"category\":\"c\"}\n";
        let text = format!("{one_item}{}\n{}\n", interaction("u1", "b1", "1", 1), interaction("u2", "b1", "1", 1));
        let users = Limits { max_interactions: 5, ..tight };
        assert_eq!(read(text.as_bytes(), "d", &users).unwrap_err().to_string(), "d:3: more than 1 users");
        assert_eq!(read(text.as_bytes(), "d", &tight).unwrap_err().to_string(), "d:3: more than 1 interactions");
    }

    #[test]
    fn a_file_without_items_is_refused() {
        assert_eq!(refused(""), "data.jsonl: the file defines no item");
        assert_eq!(refused("\n  \n"), "data.jsonl: the file defines no item");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = load("/nonexistent/data.jsonl").unwrap_err();
        assert_eq!(err.line, None);
        assert!(err.to_string().starts_with("/nonexistent/data.jsonl: cannot read the file: "), "{err}");
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let text = format!("{ITEMS}{}\n{}\n", interaction("u1", "m1", "0.1", 5), interaction("u2", "b1", "2", 3));
        let data = parse(&text).unwrap();
        let mut written = Vec::new();
        write(&data, &mut written).unwrap();
        let again = read(&written[..], "again", &Limits::default()).unwrap();
        assert_eq!(again, data);
        let first_interaction = String::from_utf8(written).unwrap().lines().nth(2).unwrap().to_owned();
        assert_eq!(first_interaction, interaction("u2", "b1", "2.0", 3));
    }
}
