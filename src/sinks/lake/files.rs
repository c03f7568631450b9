//! Building Arrow record batches from events and encoding them as Parquet files.
//!
//! The Hive partition columns (`event_type`, `year`, `month`, `day`) live in the folder
//! names only: Spark refuses a column that is both in the file and in the path.

use crate::record::{DeadLetter, Event, Retraction};
use crate::sinks::lake::layout::partition_dir;
use crate::sinks::lake::payload_columns::PayloadColumns;
pub use crate::sinks::lake::schemas::{dead_letter_schema, lake_schema, retraction_schema};
use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Int32Array, Int64Array, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Encoding settings of a lake file.
#[derive(Debug, Clone, Copy)]
pub struct FileFormat {
    /// Rows per row group.
    pub row_group_rows: usize,
    /// zstd level.
    pub zstd_level: i32,
}

impl From<&crate::settings::Settings> for FileFormat {
    fn from(s: &crate::settings::Settings) -> Self {
        FileFormat { row_group_rows: s.lake.row_group_rows, zstd_level: s.lake.zstd_level }
    }
}

/// Lake file errors.
#[derive(Debug, thiserror::Error)]
pub enum LakeFileError {
    /// Arrow could not build the batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet could not encode it.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Writing or syncing the file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// What a retraction row says happened to its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `is_valid: false`: the event stays, no longer valid.
    Invalidated,
    /// A tombstone: the event is gone (`eventline lake purge` erases its rows).
    Deleted,
}

impl Action {
    /// The `action` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Invalidated => "invalidated",
            Action::Deleted => "deleted",
        }
    }
}

/// One Arrow batch of retractions.
pub fn retractions_to_record_batch(
    rows: &[(&Retraction, Action)],
) -> Result<RecordBatch, LakeFileError> {
    let micros = |values: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(r, _)| r.event_id.to_string()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, a)| a.as_str()))),
        Arc::new(StringArray::from_iter(rows.iter().map(|(r, _)| r.event_type.as_deref()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(r, _)| &*r.coords.topic))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|(r, _)| r.coords.partition))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|(r, _)| r.coords.offset))),
        micros(rows.iter().map(|(r, _)| r.kafka_timestamp_ms.map(|ms| ms * 1000)).collect()),
        micros(rows.iter().map(|(r, _)| Some(r.received_at_ms * 1000)).collect()),
    ];
    Ok(RecordBatch::try_new(retraction_schema(), columns)?)
}

/// One Arrow batch of dead letters, rejected at `rejected_at_micros`.
pub fn dead_letters_to_record_batch(
    rows: &[&DeadLetter],
    rejected_at_micros: i64,
) -> Result<RecordBatch, LakeFileError> {
    let micros = |values: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|d| &*d.record.coords.topic))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|d| d.record.coords.partition))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|d| d.record.coords.offset))),
        Arc::new(BinaryArray::from_iter(rows.iter().map(|d| d.record.key.as_deref()))),
        Arc::new(BinaryArray::from_iter(rows.iter().map(|d| d.record.value.as_deref()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|d| d.class.as_str()))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|d| crate::storable::reason(&d.reason)),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|d| d.event_type.as_deref().map(crate::storable::text)),
        )),
        Arc::new(Int32Array::from_iter(rows.iter().map(|d| d.schema_version))),
        micros(rows.iter().map(|d| d.record.timestamp_ms.map(|ms| ms * 1000)).collect()),
        micros(vec![Some(rejected_at_micros); rows.len()]),
    ];
    Ok(RecordBatch::try_new(dead_letter_schema(), columns)?)
}

/// Events grouped by their Hive folder (event type and UTC day), in folder order. The
/// folder path is built once per group, not once per event.
pub fn group_by_folder<'a>(
    events: impl IntoIterator<Item = &'a Event>,
) -> Vec<(PathBuf, Vec<&'a Event>)> {
    let mut groups: BTreeMap<(&str, NaiveDate), Vec<&Event>> = BTreeMap::new();
    for event in events {
        groups.entry((&event.event_type, event.occurred_at.date_naive())).or_default().push(event);
    }
    groups
        .into_iter()
        .map(|((event_type, day), events)| (partition_dir(event_type, day), events))
        .collect()
}

/// One Arrow batch of events of one event type, all columns typed, timestamps in UTC
/// microseconds: the envelope columns, then the type's payload columns (`columns`).
pub fn to_record_batch(
    events: &[&Event],
    ingested_at_us: i64,
    columns: &PayloadColumns,
) -> Result<RecordBatch, LakeFileError> {
    // Borrowed strings: the payloads go straight into the Arrow buffer, without a copy each.
    let strings = |f: &dyn Fn(&Event) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(events.iter().map(|e| f(e))))
    };
    let micros = |values: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
    };
    let mut ids =
        StringBuilder::with_capacity(events.len(), events.len() * uuid::fmt::Hyphenated::LENGTH);
    let mut id_text = uuid::Uuid::encode_buffer();
    for e in events {
        ids.append_value(e.event_id.hyphenated().encode_lower(&mut id_text));
    }
    let event_type = events.first().map(|e| e.event_type.as_str()).unwrap_or_default();
    let schema = columns.schema_of(event_type);
    let typed = columns.arrays(event_type, events);
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(ids.finish()),
        Arc::new(Int32Array::from_iter_values(events.iter().map(|e| e.schema_version))),
        strings(&|e| &e.source),
        micros(events.iter().map(|e| Some(e.occurred_at.timestamp_micros())).collect()),
        strings(&|e| &e.payload),
        strings(&|e| &e.payload_hash),
        strings(&|e| &e.coords.topic),
        Arc::new(Int32Array::from_iter_values(events.iter().map(|e| e.coords.partition))),
        Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.coords.offset))),
        micros(events.iter().map(|e| e.kafka_timestamp_ms.map(|ms| ms * 1000)).collect()),
        micros(vec![Some(ingested_at_us); events.len()]),
        micros(events.iter().map(|e| Some(e.received_at_ms * 1000)).collect()),
        Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.lateness_ms))),
        Arc::new(BooleanArray::from_iter(events.iter().map(|e| Some(e.late)))),
        Arc::new(StringArray::from_iter(events.iter().map(|e| e.headers.as_deref()))),
        Arc::new(StringArray::from_iter(events.iter().map(|e| e.correlation_id.as_deref()))),
    ];
    columns.extend(typed);
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The batches of several files of one event type as one batch, by column name: a
/// column some files lack (written under an older contract) is null in their rows, as
/// a reader of the table sees it. Columns that share a name but not a type are an
/// error.
pub fn concat_by_name(batches: &[RecordBatch]) -> Result<RecordBatch, LakeFileError> {
    let mut fields: Vec<Arc<Field>> = Vec::new();
    for batch in batches {
        for field in batch.schema().fields() {
            if !fields.iter().any(|f| f.name() == field.name()) {
                fields.push(Arc::new(field.as_ref().clone().with_nullable(true)));
            }
        }
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let aligned = batches
        .iter()
        .map(|batch| {
            let columns: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .map(|f| match batch.column_by_name(f.name()) {
                    Some(column) => column.clone(),
                    None => arrow::array::new_null_array(f.data_type(), batch.num_rows()),
                })
                .collect();
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &aligned)?)
}

/// Writes `batch` as a zstd Parquet file at `path` and fsyncs it.
pub fn write_parquet(
    path: &Path,
    batch: &RecordBatch,
    format: FileFormat,
) -> Result<(), LakeFileError> {
    let io = |source| LakeFileError::Io { path: path.display().to_string(), source };
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(format.zstd_level)?))
        .set_max_row_group_row_count(Some(format.row_group_rows))
        .build();
    let file = File::create(path).map_err(io)?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(batch)?;
    let file = writer.into_inner()?;
    file.sync_all().map_err(io)
}

/// `batch` as the bytes of a zstd Parquet file, for the lake's store to write whole.
pub fn encode_parquet(batch: &RecordBatch, format: FileFormat) -> Result<Vec<u8>, LakeFileError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(format.zstd_level)?))
        .set_max_row_group_row_count(Some(format.row_group_rows))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))?;
    writer.write(batch)?;
    Ok(writer.into_inner()?)
}

impl crate::failure::Classified for LakeFileError {
    fn class(&self) -> crate::failure::FailureClass {
        match self {
            LakeFileError::Io { source, .. } => crate::failure::io_class(source),
            // The encoder refused what it was given: those rows can never be written.
            LakeFileError::Arrow(_) | LakeFileError::Parquet(_) => {
                crate::failure::FailureClass::Poison
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Coords;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn event(offset: i64) -> Event {
        let mut event = Event::fixture(
            Coords { topic: "t".into(), partition: 2, offset },
            r#"{"account_id":"acc_1234"}"#,
        );
        event.occurred_at = chrono::DateTime::from_timestamp(1_763_800_000, 123_456_000).unwrap();
        event
    }

    #[test]
    fn events_group_by_type_and_utc_day_in_order() {
        let mut late = event(1);
        late.occurred_at = chrono::DateTime::parse_from_rfc3339("2025-11-23T00:30:00+01:00")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut other = event(2);
        other.event_type = "contact_created".into();
        let events = [event(0), late, other, event(3)];
        let groups = group_by_folder(&events);
        let summary: Vec<(String, Vec<i64>)> = groups
            .iter()
            .map(|(dir, es)| {
                (dir.display().to_string(), es.iter().map(|e| e.coords.offset).collect())
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("event_type=account_created/year=2025/month=11/day=22".to_string(), vec![0, 1, 3]),
                ("event_type=contact_created/year=2025/month=11/day=22".to_string(), vec![2]),
            ]
        );
    }

    #[test]
    fn a_file_reads_back_with_the_same_rows_and_microsecond_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let events: Vec<Event> = (0..5).map(event).collect();
        let refs: Vec<&Event> = events.iter().collect();
        write_parquet(
            &path,
            &to_record_batch(&refs, 42, &PayloadColumns::default()).unwrap(),
            FileFormat { row_group_rows: 2, zstd_level: 3 },
        )
        .unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 3);
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
        let occurred =
            batches[0].column(3).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert_eq!(occurred.value(0), 1_763_800_000_123_456);
        let offsets = batches[0].column(8).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(offsets.value(1), 1);
    }
}
