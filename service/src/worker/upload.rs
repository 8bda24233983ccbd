//! Streaming one export's files to S3: each file a single PutObject up to `part_size`, a
//! multipart upload in parts of that size beyond (CRC32 checksums), an unfinished multipart
//! upload aborted so its parts are not kept. Memory per job stays around one part.

use super::{JobError, Worker};
use crate::export::{self, ExportFile, Piece};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use std::path::Path;

/// Where a file's bytes are going: nowhere yet, or a multipart upload under way.
struct Multipart {
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
}

fn s3_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    what: String,
) -> impl FnOnce(aws_sdk_s3::error::SdkError<E, R>) -> JobError {
    move |e| JobError::Retry(format!("{what}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))
}

impl Worker {
    /// Streams the checked files of the export at `zip` to `s3://{bucket}/{prefix}/{name}`:
    /// a blocking reader inflates each file into 1 MiB chunks, this side gathers them into
    /// parts of `part_size`. A multipart upload left unfinished is aborted.
    pub(super) async fn upload_export(&self, zip: &Path, files: &[ExportFile], bucket: &str, prefix: &str) -> Result<(), JobError> {
        const CHUNK: usize = 1 << 20;
        let part_size = self.cfg.part_size;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(2);
        let (path, list) = (zip.to_path_buf(), files.to_vec());
        let reader = tokio::task::spawn_blocking(move || export::stream(&path, &list, CHUNK, &tx));

        let mut multipart: Option<Multipart> = None;
        let uploaded: Result<(), JobError> = async {
            let mut key = String::new();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(piece) = rx.recv().await {
                match piece {
                    Piece::Start { name, size } => {
                        key = format!("{prefix}/{name}");
                        buf = Vec::with_capacity((size as usize).min(part_size) + CHUNK);
                    }
                    Piece::Data(bytes) => {
                        buf.extend_from_slice(&bytes);
                        if buf.len() >= part_size {
                            let mut rest = Vec::with_capacity(part_size + CHUNK);
                            rest.extend_from_slice(&buf[part_size..]);
                            buf.truncate(part_size);
                            let part = std::mem::replace(&mut buf, rest);
                            let upload = match multipart.as_mut() {
                                Some(m) => m,
                                None => multipart.insert(self.start_multipart(bucket, &key).await?),
                            };
                            self.upload_part(bucket, upload, part).await?;
                        }
                    }
                    Piece::End => match multipart.take() {
                        None => self.put(bucket, &key, std::mem::take(&mut buf), "application/octet-stream").await?,
                        Some(mut upload) => {
                            if !buf.is_empty() {
                                let last = std::mem::take(&mut buf);
                                if let Err(e) = self.upload_part(bucket, &mut upload, last).await {
                                    multipart = Some(upload);
                                    return Err(e);
                                }
                            }
                            if let Err(e) = self.complete_multipart(bucket, &upload).await {
                                multipart = Some(upload);
                                return Err(e);
                            }
                        }
                    },
                }
            }
            Ok(())
        }
        .await;
        drop(rx); // a reader still sending sees the channel closed and stops
        if let Some(upload) = multipart {
            self.abort_multipart(bucket, &upload).await;
        }
        let read = reader.await.map_err(|e| format!("reading the export crashed: {e}"))?;
        uploaded.and(read)
    }

    async fn start_multipart(&self, bucket: &str, key: &str) -> Result<Multipart, JobError> {
        let out = self
            .s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type("application/octet-stream")
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(s3_error(format!("starting a multipart upload of s3://{bucket}/{key}")))?;
        let upload_id = out.upload_id().ok_or_else(|| format!("S3 started no multipart upload for s3://{bucket}/{key}"))?.to_string();
        Ok(Multipart { key: key.to_string(), upload_id, parts: Vec::new() })
    }

    async fn upload_part(&self, bucket: &str, upload: &mut Multipart, data: Vec<u8>) -> Result<(), JobError> {
        let number = upload.parts.len() as i32 + 1;
        let out = self
            .s3
            .upload_part()
            .bucket(bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(data.into())
            .send()
            .await
            .map_err(s3_error(format!("uploading part {number} of s3://{bucket}/{}", upload.key)))?;
        upload.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(String::from))
                .set_checksum_crc32(out.checksum_crc32().map(String::from))
                .build(),
        );
        Ok(())
    }

    async fn complete_multipart(&self, bucket: &str, upload: &Multipart) -> Result<(), JobError> {
        self.s3
            .complete_multipart_upload()
            .bucket(bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(upload.parts.clone())).build())
            .send()
            .await
            .map(|_| ())
            .map_err(s3_error(format!("completing the multipart upload of s3://{bucket}/{}", upload.key)))
    }

    /// Aborts an unfinished multipart upload, so its parts are not kept (and billed) forever.
    async fn abort_multipart(&self, bucket: &str, upload: &Multipart) {
        let aborted = self.s3.abort_multipart_upload().bucket(bucket).key(&upload.key).upload_id(&upload.upload_id).send().await;
        if let Err(e) = aborted {
            tracing::warn!(key = upload.key, error = %aws_sdk_s3::error::DisplayErrorContext(&e),
                "could not abort a multipart upload; a bucket lifecycle rule for incomplete uploads will remove it");
        }
    }

    pub(super) async fn put(&self, bucket: &str, key: &str, data: Vec<u8>, content_type: &str) -> Result<(), JobError> {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(data.into())
            .send()
            .await
            .map(|_| ())
            .map_err(s3_error(format!("uploading s3://{bucket}/{key}")))
    }
}
