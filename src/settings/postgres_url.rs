//! The Postgres URL as libpq receives it: the `postgres.password_file` password and the
//! `postgres.ssl*` keys folded into `postgres.url`, with the `url` crate doing the
//! parsing and percent-encoding.

use super::SettingsError;
use std::path::PathBuf;
use url::Url;

/// libpq's `sslmode` values.
pub const SSL_MODES: [&str; 6] =
    ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

/// The TLS keys of `[postgres]`; each becomes the libpq parameter of the same name.
#[derive(Debug, Default, Clone)]
pub struct PostgresTls {
    /// `sslmode` (see [`SSL_MODES`]).
    pub sslmode: Option<String>,
    /// CA certificate the server's certificate must chain to.
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate, for servers that authenticate clients by certificate.
    pub sslcert: Option<PathBuf>,
    /// The client certificate's key.
    pub sslkey: Option<PathBuf>,
}

/// `url` with `password` (when given) as its user's password and each TLS key set as a
/// query parameter, replacing one the URL already had.
pub fn resolve(
    url: &str,
    password: Option<&str>,
    tls: &PostgresTls,
) -> Result<String, SettingsError> {
    let params: Vec<(&str, String)> = [
        ("sslmode", tls.sslmode.clone()),
        ("sslrootcert", tls.sslrootcert.as_ref().map(|p| p.display().to_string())),
        ("sslcert", tls.sslcert.as_ref().map(|p| p.display().to_string())),
        ("sslkey", tls.sslkey.as_ref().map(|p| p.display().to_string())),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    if let Some(mode) = &tls.sslmode {
        if !SSL_MODES.contains(&mode.as_str()) {
            return Err(SettingsError::Rule {
                key: "postgres.sslmode",
                rule: "must be one of disable, allow, prefer, require, verify-ca, verify-full",
            });
        }
    }
    if password.is_none() && params.is_empty() {
        return Ok(url.to_string());
    }
    let mut parsed = Url::parse(url).map_err(|_| SettingsError::Rule {
        key: "postgres.url",
        rule: "must be a postgres:// URL when postgres.password_file or postgres.ssl* is set",
    })?;
    if let Some(password) = password {
        // A URL without a host (a Unix socket given as `?host=/run/...`) cannot carry a
        // password in its authority; libpq also takes it as a parameter.
        if parsed.set_password(Some(password)).is_err() {
            set_param(&mut parsed, "password", password);
        }
    }
    for (key, value) in &params {
        set_param(&mut parsed, key, value);
    }
    Ok(parsed.to_string())
}

fn set_param(url: &mut Url, key: &str, value: &str) {
    let kept: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| k != key).map(|(k, v)| (k.into(), v.into())).collect();
    url.query_pairs_mut().clear().extend_pairs(kept).append_pair(key, value);
}

/// The password in `url` (its authority or a `password=` parameter), decoded, so that it
/// can be registered as a secret.
pub fn password_of(url: &str) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    if let Some(password) = parsed.password() {
        return percent_encoding::percent_decode_str(password)
            .decode_utf8()
            .ok()
            .map(|p| p.into_owned());
    }
    parsed.query_pairs().find(|(k, _)| k == "password").map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: &str, root: &str) -> PostgresTls {
        PostgresTls {
            sslmode: Some(mode.into()),
            sslrootcert: Some(root.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_password_file_goes_into_the_url_encoded() {
        let none = PostgresTls::default();
        assert_eq!(
            resolve("postgres://bob@h:5432/db?sslmode=require", Some("p@ss:w/rd"), &none).unwrap(),
            "postgres://bob:p%40ss%3Aw%2Frd@h:5432/db?sslmode=require"
        );
        assert_eq!(
            resolve("postgres://bob:old@h/db", Some("new"), &none).unwrap(),
            "postgres://bob:new@h/db"
        );
        assert_eq!(
            password_of("postgres://bob:p%40ss%3Aw%2Frd@h:5432/db").as_deref(),
            Some("p@ss:w/rd")
        );
        assert_eq!(
            password_of("postgres://h/db?user=bob&password=s3cret").as_deref(),
            Some("s3cret")
        );
        assert_eq!(password_of("postgres://bob@h/db"), None);
    }

    #[test]
    fn tls_keys_become_parameters_replacing_the_urls_own() {
        assert_eq!(
            resolve(
                "postgres://bob@h/db?sslmode=disable&application_name=x",
                None,
                &tls("verify-full", "/ca.crt")
            )
            .unwrap(),
            "postgres://bob@h/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fca.crt"
        );
        // Nothing to fold in: the URL is left exactly as written, even if it is not a URL.
        assert_eq!(
            resolve("host=h dbname=db", None, &PostgresTls::default()).unwrap(),
            "host=h dbname=db"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = resolve("postgres://h/db", None, &tls("sometimes", "/ca")).unwrap_err();
        assert!(err.to_string().contains("`postgres.sslmode`"), "{err}");
        let err = resolve("host=h dbname=db", Some("pw"), &PostgresTls::default()).unwrap_err();
        assert!(err.to_string().contains("`postgres.url`"), "{err}");
    }
}
