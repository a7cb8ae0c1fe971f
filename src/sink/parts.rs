//! A CSV output in parts: `--max-file-size` cuts it into files of at most
//! that many bytes, and a `--state` run's `--max-import-size` into folders
//! of at most that many bytes (one INCREMENTAL import each). Every part
//! starts with the header, and cuts fall between rows (a row is one line:
//! embedded line breaks became spaces). No part becomes visible before the
//! whole run commits.

use crate::config::Target;
use crate::error::{Error, Result};
use crate::sink::CsvOut;

/// How the parts are named.
#[derive(Debug, Clone)]
pub(crate) enum PartNames {
    /// `NAME.csv` → `NAME-00000.csv`, `NAME-00001.csv`, … beside it.
    Beside(Target),
    /// `RUNS/<run>/part-00000.csv`, …; a further folder is `RUNS/<run>-002/`.
    Runs { runs: Target, run: String },
}

impl PartNames {
    /// The name of folder `folder` of a run (`None` for `Beside`).
    pub fn folder(&self, folder: usize) -> Option<String> {
        match self {
            PartNames::Beside(_) => None,
            PartNames::Runs { run, .. } if folder == 0 => Some(run.clone()),
            PartNames::Runs { run, .. } => Some(format!("{run}-{:03}", folder + 1)),
        }
    }

    pub fn part(&self, folder: usize, part: usize) -> Target {
        match self {
            PartNames::Beside(target) => target.with_suffix(&format!("-{part:05}")),
            PartNames::Runs { runs, .. } => {
                let dir = self.folder(folder).unwrap_or_default();
                runs.join(&format!("{dir}/part-{part:05}.csv"))
            }
        }
    }
}

/// One part written.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    /// Its folder (0 unless a `--state` run was cut).
    pub folder: usize,
    /// The run's row number of its first row (0-based).
    pub first_row: u64,
    /// Its size, header included.
    pub bytes: u64,
    /// The CRC-32 of its bytes (0 for a single output unless
    /// `ConvertConfig::checksum` asked for it).
    pub crc32: u32,
}

type Open<'a> = Box<dyn FnMut(&Target) -> Result<CsvOut> + 'a>;

/// Rows in, parts out.
pub(crate) struct Parts<'a> {
    open: Open<'a>,
    names: PartNames,
    max_file: u64,
    max_folder: u64,
    header: Vec<u8>,
    current: Option<CsvOut>,
    /// Parts finished, waiting for the commit.
    finished: Vec<CsvOut>,
    /// Rows written so far.
    rows: u64,
    folder_bytes: u64,
    /// The CRC-32 of the current part so far.
    crc: flate2::Crc,
    pub parts: Vec<Part>,
}

impl<'a> Parts<'a> {
    /// Opens the first part.
    pub fn new(
        names: PartNames,
        max_file: Option<u64>,
        max_folder: Option<u64>,
        open: Open<'a>,
    ) -> Result<Self> {
        let mut parts = Parts {
            open,
            names,
            max_file: max_file.unwrap_or(u64::MAX),
            max_folder: max_folder.unwrap_or(u64::MAX),
            header: Vec::new(),
            current: None,
            finished: Vec::new(),
            rows: 0,
            folder_bytes: 0,
            crc: flate2::Crc::new(),
            parts: Vec::new(),
        };
        parts.start(0, 0)?;
        Ok(parts)
    }

    fn start(&mut self, folder: usize, part: usize) -> Result<()> {
        let target = self.names.part(folder, part);
        let mut out = (self.open)(&target)?;
        out.write_all(&self.header)?;
        if let Some(done) = self.current.replace(out) {
            self.finished.push(done);
        }
        self.seal();
        self.crc.update(&self.header);
        if self.parts.last().is_none_or(|p| p.folder != folder) {
            self.folder_bytes = 0;
        }
        self.folder_bytes += self.header.len() as u64;
        self.parts.push(Part {
            name: target.to_string(),
            folder,
            first_row: self.rows,
            bytes: self.header.len() as u64,
            crc32: 0,
        });
        Ok(())
    }

    /// Records the CRC of the part being finished, and starts a new one.
    fn seal(&mut self) {
        if let Some(part) = self.parts.last_mut() {
            part.crc32 = self.crc.sum();
        }
        self.crc.reset();
    }

    /// Sets the header, written at the top of every part; the first part
    /// must still be empty.
    pub fn header(&mut self, header: &[u8]) -> Result<()> {
        let limit = self.max_file.min(self.max_folder);
        if header.len() as u64 >= limit {
            return Err(Error::usage(format!(
                "the {}-byte header does not fit in a part of at most {limit} bytes with a row: \
                 raise --max-file-size or --max-import-size",
                header.len()
            )));
        }
        self.header = header.to_vec();
        let part = self.parts.last_mut().expect("a part is open");
        debug_assert_eq!(part.bytes, 0);
        part.bytes += header.len() as u64;
        self.folder_bytes += header.len() as u64;
        self.crc.update(header);
        self.current
            .as_mut()
            .expect("a part is open")
            .write_all(header)
    }

    /// Writes whole rows, starting a new part (or folder) before a row
    /// that would not fit.
    pub fn write_rows(&mut self, rows: &[u8]) -> Result<()> {
        let mut rest = rows;
        while !rest.is_empty() {
            let part = self.parts.last().expect("a part is open");
            let room = (self.max_file.saturating_sub(part.bytes))
                .min(self.max_folder.saturating_sub(self.folder_bytes));
            let fit = if rest.len() as u64 <= room {
                rest.len()
            } else {
                memchr::memrchr(b'\n', &rest[..room as usize]).map_or(0, |i| i + 1)
            };
            if fit > 0 {
                self.put(&rest[..fit])?;
                rest = &rest[fit..];
                continue;
            }
            // The next row does not fit: a new part, in a new folder if
            // the folder is what is full.
            let row = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1) as u64;
            let header = self.header.len() as u64;
            let limit = self.max_file.min(self.max_folder);
            if header + row > limit {
                return Err(Error::usage(format!(
                    "a row of {row} bytes (with the {header}-byte header) does not fit in a part \
                     of at most {limit} bytes: raise --max-file-size or --max-import-size"
                )));
            }
            let folder = part.folder;
            if self.folder_bytes + header + row > self.max_folder {
                self.start(folder + 1, 0)?;
            } else {
                let index = self.parts.iter().filter(|p| p.folder == folder).count();
                self.start(folder, index)?;
            }
        }
        Ok(())
    }

    fn put(&mut self, rows: &[u8]) -> Result<()> {
        self.current
            .as_mut()
            .expect("a part is open")
            .write_all(rows)?;
        let part = self.parts.last_mut().expect("a part is open");
        part.bytes += rows.len() as u64;
        self.folder_bytes += rows.len() as u64;
        self.crc.update(rows);
        self.rows += memchr::memchr_iter(b'\n', rows).count() as u64;
        Ok(())
    }

    /// Commits every part, in order.
    pub fn commit(mut self) -> Result<Vec<Part>> {
        self.seal();
        self.finished.extend(self.current.take());
        for out in self.finished.drain(..) {
            out.commit()?;
        }
        Ok(self.parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Parts into memory: (name, bytes) per part.
    fn split(
        rows: &[&str],
        max_file: Option<u64>,
        max_folder: Option<u64>,
    ) -> Vec<(String, String)> {
        let dir = tempfile::tempdir().unwrap();
        let names = PartNames::Runs {
            runs: Target::Local(dir.path().to_path_buf()),
            run: "R".into(),
        };
        let opened = Rc::new(RefCell::new(Vec::new()));
        let seen = Rc::clone(&opened);
        let open: Open = Box::new(move |t: &Target| {
            seen.borrow_mut().push(t.to_string());
            let Target::Local(path) = t else {
                unreachable!()
            };
            Ok(CsvOut::File(crate::sink::AtomicFile::create(path)?))
        });
        let mut parts = Parts::new(names, max_file, max_folder, open).unwrap();
        parts.header(b"H,I\n").unwrap();
        for r in rows {
            parts.write_rows(r.as_bytes()).unwrap();
        }
        let done = parts.commit().unwrap();
        assert_eq!(done.len(), opened.borrow().len());
        done.iter()
            .map(|p| {
                let rel = p
                    .name
                    .strip_prefix(&dir.path().display().to_string())
                    .unwrap();
                let text = std::fs::read_to_string(&p.name).unwrap();
                assert_eq!(p.bytes, text.len() as u64);
                let mut crc = flate2::Crc::new();
                crc.update(text.as_bytes());
                assert_eq!(p.crc32, crc.sum());
                (rel.to_string(), text)
            })
            .collect()
    }

    #[test]
    fn cuts_between_rows_with_the_header_in_every_part() {
        let got = split(&["a,1\nbb,2\n", "c,3\n"], Some(12), None);
        assert_eq!(
            got,
            [
                ("/R/part-00000.csv".to_string(), "H,I\na,1\n".to_string()),
                ("/R/part-00001.csv".to_string(), "H,I\nbb,2\n".to_string()),
                ("/R/part-00002.csv".to_string(), "H,I\nc,3\n".to_string()),
            ]
        );
        let got = split(&["a,1\nbb,2\n", "c,3\n"], Some(13), None);
        assert_eq!(got[0].1, "H,I\na,1\nbb,2\n");
        assert_eq!(got[1].1, "H,I\nc,3\n");
    }

    #[test]
    fn a_full_folder_starts_the_next_run_folder() {
        let got = split(&["a,1\n", "b,2\n", "c,3\n", "d,4\n"], Some(8), Some(16));
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "/R/part-00000.csv",
                "/R/part-00001.csv",
                "/R-002/part-00000.csv",
                "/R-002/part-00001.csv"
            ]
        );
        assert!(
            got.iter()
                .all(|(_, t)| t.starts_with("H,I\n") && t.len() == 8)
        );
    }

    #[test]
    fn without_limits_there_is_one_part() {
        let got = split(&["a,1\n", "b,2\n"], None, None);
        assert_eq!(
            got,
            [(
                "/R/part-00000.csv".to_string(),
                "H,I\na,1\nb,2\n".to_string()
            )]
        );
    }
}
