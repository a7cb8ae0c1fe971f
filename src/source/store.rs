//! Object storage: S3, Azure Blob and GCS through `object_store`.
//!
//! Each cloud is configured the way its own tools are: from that cloud's
//! environment variables only (`AWS_*`, `AZURE_*`, `GOOGLE_*`; an unrelated
//! variable must not reach the store), then `--storage-option KEY=VALUE`.
//! For S3 the credentials and the region come from the AWS SDK's default
//! chain (environment, `AWS_PROFILE` with `~/.aws/config` and
//! `~/.aws/credentials` including assume-role, SSO and credential_process,
//! web identity, container and instance roles), exactly as the AWS CLI
//! resolves them. Secrets are never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::ProvideCredentials;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path as StorePath;
use object_store::{CredentialProvider, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use url::Url;

use crate::error::{Error, Result};

/// A parsed object-store URL: which store, and the key prefix in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// `s3://bucket`, `gs://bucket`, `az://container`, … — the part that
    /// names the store, as users write it.
    pub root: String,
    pub url: Url,
    /// The key (or key prefix) inside the store, without a leading `/`.
    pub key: String,
}

impl StoreUrl {
    /// `None` for a local path; an error for a URL of another scheme.
    pub fn parse(text: &str) -> Result<Option<StoreUrl>> {
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(None);
        };
        if scheme == "file" {
            return Ok(None);
        }
        let url = Url::parse(text).map_err(|e| Error::usage(format!("{text}: {e}")))?;
        match url.scheme() {
            "s3" | "s3a" | "gs" | "az" | "adl" | "azure" | "abfs" | "abfss" => {}
            other => {
                return Err(Error::usage(format!(
                    "{text}: unsupported URL scheme {other}://; use s3://, gs://, az://, abfs[s]:// or file://"
                )));
            }
        }
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err(Error::usage(format!(
                "{text}: the URL names no bucket or container"
            )));
        }
        let root = match url.username() {
            "" => format!("{}://{host}", url.scheme()),
            user => format!("{}://{user}@{host}", url.scheme()),
        };
        let key = url.path().trim_start_matches('/').to_string();
        Ok(Some(StoreUrl {
            root,
            url,
            key: percent_decode(&key),
        }))
    }

    /// The URL of a key in the same store.
    pub fn at(&self, key: &str) -> String {
        format!("{}/{key}", self.root)
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Configuration pairs for one store builder.
type Settings<K> = Vec<(K, String)>;

/// Builds and caches one store per bucket or container.
pub struct Stores {
    options: Vec<(String, String)>,
    retry: RetryConfig,
    env: Vec<(String, String)>,
    cache: tokio::sync::Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl Stores {
    /// `options` are `--storage-option` pairs; `env` the process
    /// environment (passed in so tests and logs can see what is used).
    pub fn new(options: Vec<(String, String)>, env: Vec<(String, String)>) -> Self {
        Stores {
            options,
            retry: RetryConfig::default(),
            env,
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Retries of failed requests: `retries` at most, within `timeout`.
    pub fn with_retries(mut self, retries: usize, timeout: Duration) -> Self {
        self.retry.max_retries = retries;
        self.retry.retry_timeout = timeout;
        self
    }

    fn env_with_prefix(&self, prefix: &str) -> impl Iterator<Item = (String, &str)> {
        self.env
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
    }

    /// The store for `url`'s bucket or container.
    pub async fn get(&self, url: &StoreUrl) -> Result<Arc<dyn ObjectStore>> {
        let mut cache = self.cache.lock().await;
        if let Some(store) = cache.get(&url.root) {
            return Ok(Arc::clone(store));
        }
        let store = self.build(url).await?;
        cache.insert(url.root.clone(), Arc::clone(&store));
        Ok(store)
    }

    /// The settings for a store of key type `K`: first this cloud's
    /// environment variables (`prefix`), ignoring names the store does not
    /// know, then every `--storage-option`, which must be known.
    fn settings<K>(&self, prefix: &str) -> Result<(Settings<K>, Settings<K>)>
    where
        K: std::str::FromStr<Err = object_store::Error>,
    {
        let env = self
            .env_with_prefix(prefix)
            .filter_map(|(k, v)| Some((k.parse::<K>().ok()?, v.to_string())))
            .collect();
        let options = self
            .options
            .iter()
            .map(|(k, v)| {
                let key = k
                    .to_ascii_lowercase()
                    .parse::<K>()
                    .map_err(|e| Error::usage(format!("--storage-option {k}: {e}")))?;
                Ok((key, v.clone()))
            })
            .collect::<Result<_>>()?;
        Ok((env, options))
    }

    async fn build(&self, url: &StoreUrl) -> Result<Arc<dyn ObjectStore>> {
        let fail = |e: object_store::Error| Error::Store {
            url: url.url.to_string(),
            what: "cannot configure the store".into(),
            source: e,
        };
        let root = url.root.as_str();
        let store: Arc<dyn ObjectStore> = match url.url.scheme() {
            "s3" | "s3a" => {
                let (env, options) = self.settings::<AmazonS3ConfigKey>("AWS_")?;
                let mut b = AmazonS3Builder::new()
                    .with_url(root)
                    .with_retry(self.retry.clone());
                b = env.into_iter().fold(b, |b, (k, v)| b.with_config(k, v));
                let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                if let Some(region) = sdk.region() {
                    b = b.with_region(region.as_ref());
                }
                if let Some(endpoint) = sdk.endpoint_url() {
                    b = b.with_endpoint(endpoint);
                    if endpoint.starts_with("http://") {
                        b = b.with_allow_http(true);
                    }
                }
                let explicit_keys = self
                    .options
                    .iter()
                    .any(|(k, _)| k.to_ascii_lowercase().contains("access_key_id"));
                if let (Some(provider), false) = (sdk.credentials_provider(), explicit_keys) {
                    b = b.with_credentials(Arc::new(SdkCredentials::new(provider)));
                }
                b = options.into_iter().fold(b, |b, (k, v)| b.with_config(k, v));
                log::debug!(
                    "{root}: S3 store, region {:?}",
                    sdk.region().map(|r| r.to_string())
                );
                Arc::new(b.build().map_err(fail)?)
            }
            "gs" => {
                let (env, options) = self.settings::<GoogleConfigKey>("GOOGLE_")?;
                let b = GoogleCloudStorageBuilder::new()
                    .with_url(root)
                    .with_retry(self.retry.clone());
                let b = env
                    .into_iter()
                    .chain(options)
                    .fold(b, |b, (k, v)| b.with_config(k, v));
                log::debug!("{root}: GCS store");
                Arc::new(b.build().map_err(fail)?)
            }
            _ => {
                let (env, options) = self.settings::<AzureConfigKey>("AZURE_")?;
                let b = MicrosoftAzureBuilder::new()
                    .with_url(url.url.as_str())
                    .with_retry(self.retry.clone());
                let b = env
                    .into_iter()
                    .chain(options)
                    .fold(b, |b, (k, v)| b.with_config(k, v));
                log::debug!("{root}: Azure store");
                Arc::new(b.build().map_err(fail)?)
            }
        };
        Ok(store)
    }
}

/// Lists every object under `url` (or the one object it names), in key
/// order, with keys relative to the prefix.
pub async fn list(stores: &Stores, url: &StoreUrl) -> Result<Vec<(String, ObjectMeta)>> {
    let store = stores.get(url).await?;
    let err = |what: &str, e| Error::Store {
        url: url.url.to_string(),
        what: what.into(),
        source: e,
    };
    let prefix = url.key.trim_end_matches('/');
    let listed: Vec<ObjectMeta> = store
        .list(Some(&StorePath::from(prefix)))
        .try_collect()
        .await
        .map_err(|e| err("cannot list", e))?;
    let mut found: Vec<(String, ObjectMeta)> = listed
        .into_iter()
        .map(|meta| {
            let full = meta.location.as_ref();
            let key = full
                .strip_prefix(prefix)
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(full)
                .to_string();
            (key, meta)
        })
        .collect();
    if found.is_empty() && !prefix.is_empty() && !url.key.ends_with('/') {
        // The URL may name one object rather than a prefix.
        match store.head(&StorePath::from(prefix)).await {
            Ok(meta) => {
                let name = prefix.rsplit('/').next().unwrap_or(prefix).to_string();
                found.push((name, meta));
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(err("cannot read", e)),
        }
    }
    found.sort_by(|a, b| a.1.location.as_ref().cmp(b.1.location.as_ref()));
    Ok(found)
}

/// The AWS SDK's credential chain as an object_store credential provider,
/// caching each credential until shortly before it expires.
#[derive(Debug)]
struct SdkCredentials {
    provider: aws_credential_types::provider::SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl SdkCredentials {
    fn new(provider: aws_credential_types::provider::SharedCredentialsProvider) -> Self {
        SdkCredentials {
            provider,
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((cred, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|t| {
                t.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > Duration::from_secs(300))
            });
            if fresh {
                return Ok(Arc::clone(cred));
            }
        }
        let creds = self.provider.provide_credentials().await.map_err(|e| {
            object_store::Error::Generic {
                store: "S3",
                source: format!("no AWS credentials from the default chain: {e}").into(),
            }
        })?;
        let cred = Arc::new(AwsCredential {
            key_id: creds.access_key_id().to_string(),
            secret_key: creds.secret_access_key().to_string(),
            token: creds.session_token().map(str::to_string),
        });
        *cached = Some((Arc::clone(&cred), creds.expiry()));
        Ok(cred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        let u = StoreUrl::parse("s3://raw/useritem/2019/").unwrap().unwrap();
        assert_eq!(u.root, "s3://raw");
        assert_eq!(u.key, "useritem/2019/");
        assert_eq!(u.at("a/b"), "s3://raw/a/b");
        let u = StoreUrl::parse("abfss://data@acct.dfs.core.windows.net/x/y")
            .unwrap()
            .unwrap();
        assert_eq!(u.root, "abfss://data@acct.dfs.core.windows.net");
        assert_eq!(u.key, "x/y");
        assert_eq!(StoreUrl::parse("local/dir").unwrap(), None);
        assert_eq!(StoreUrl::parse("file:///tmp/x").unwrap(), None);
        assert!(StoreUrl::parse("ftp://host/x").is_err());
        assert!(StoreUrl::parse("s3:///x").is_err());
    }
}
