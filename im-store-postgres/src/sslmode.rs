//! The TLS settings of a connection string, as libpq reads them: `sslmode`
//! and `sslrootcert`, taken out of the string before the driver parses the
//! rest (it knows neither `verify-ca`/`verify-full` nor `sslrootcert`).
//!
//! Pure string work, no IO: [`split_tls_params`] is property-tested.

use std::fmt;

/// How a connection uses TLS (libpq's `sslmode`).
///
/// | mode | encrypted | server checked |
/// |---|---|---|
/// | `disable` | never | no |
/// | `prefer` (default) | if the server offers TLS | no |
/// | `require` | always | no (as libpq; with `sslrootcert`, as `verify-ca`) |
/// | `verify-ca` | always | certificate chain against the roots |
/// | `verify-full` | always | chain, and the host name against the certificate |
///
/// Only `verify-full` protects against a man in the middle; use it for a
/// database reached over a network you do not control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server supports it, else plain; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not checked.
    Require,
    /// TLS, the certificate chain checked against the roots (not the host name).
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    /// The mode for a value of `sslmode`.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// The value of `sslmode` for this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// True if the connection must be encrypted (no plain fallback).
    pub fn requires_tls(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS settings found in a connection string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsParams {
    /// `sslmode` (default `prefer`, as libpq).
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of trusted roots, or `system` for the
    /// built-in (Mozilla) roots. `None`: the built-in roots.
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (a
/// `postgres://` / `postgresql://` URL, or `key=value` pairs) and returns
/// the rest, for the driver, with the settings found.
pub fn split_tls_params(conn: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let mut take = |key: &str, value: String| -> Result<bool, String> {
        match key {
            "sslmode" => {
                params.mode = SslMode::parse(&value).ok_or_else(|| {
                    format!(
                        "sslmode={value:?} is not one of disable, prefer, require, verify-ca, verify-full"
                    )
                })?;
                Ok(true)
            }
            "sslrootcert" => {
                params.root_cert = Some(value);
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        split_url(conn, &mut take)?
    } else {
        split_key_values(conn, &mut take)?
    };
    Ok((rest, params))
}

/// The query parameters of a URL, those `take` keeps removed.
fn split_url(
    url: &str,
    take: &mut impl FnMut(&str, String) -> Result<bool, String>,
) -> Result<String, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_owned());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !take(key, percent_decode(value)?)? {
            kept.push(pair);
        }
    }
    Ok(if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

/// `key=value` pairs separated by spaces (values may be single-quoted, with
/// `\'` and `\\` escapes), those `take` keeps removed.
fn split_key_values(
    conn: &str,
    take: &mut impl FnMut(&str, String) -> Result<bool, String>,
) -> Result<String, String> {
    let mut kept: Vec<&str> = Vec::new();
    let mut rest = conn.trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("expected key=value in the connection string at {rest:?}"))?;
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let (value, len) = key_value(after)?;
        let end = rest.len() - after.len() + len;
        if !take(key, value)? {
            kept.push(&rest[..end]);
        }
        rest = rest[end..].trim_start();
    }
    Ok(kept.join(" "))
}

/// One value and the bytes it took.
fn key_value(s: &str) -> Result<(String, usize), String> {
    let Some(quoted) = s.strip_prefix('\'') else {
        let len = s.find(char::is_whitespace).unwrap_or(s.len());
        return Ok((s[..len].to_owned(), len));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => return Ok((value, i + 2)),
            '\\' => match chars.next() {
                Some((_, e)) => value.push(e),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("unterminated quoted value in the connection string".into())
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// The connection string with any password replaced by `***`, for logs and
/// error messages.
pub fn redact_url(conn: &str) -> String {
    if let Some(scheme) = conn.find("://") {
        let after = &conn[scheme + 3..];
        let authority_end = after.find(['/', '?']).unwrap_or(after.len());
        if let Some(at) = after[..authority_end].rfind('@') {
            let userinfo = &after[..at];
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{}{user}:***@{}", &conn[..scheme + 3], &after[at + 1..]);
            }
        }
        return redact_query_password(conn);
    }
    let mut out = Vec::new();
    let mut rest = conn.trim_start();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let Ok((_, len)) = key_value(after) else {
            out.push("…".to_owned());
            break;
        };
        let end = rest.len() - after.len() + len;
        out.push(if key == "password" {
            "password=***".to_owned()
        } else {
            rest[..end].to_owned()
        });
        rest = rest[end..].trim_start();
    }
    out.join(" ")
}

/// `password=` in a URL's query, replaced.
fn redact_query_password(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<&str> = query
        .split('&')
        .map(|p| {
            if p.starts_with("password=") {
                "password=***"
            } else {
                p
            }
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_modes_are_taken_out() {
        let (rest, p) =
            split_tls_params("postgres://u@h:5432/db?sslmode=verify-full&application_name=x")
                .expect("parse");
        assert_eq!(rest, "postgres://u@h:5432/db?application_name=x");
        assert_eq!(p.mode, SslMode::VerifyFull);
        let (rest, p) =
            split_tls_params("postgresql://u@h/db?sslrootcert=%2Fetc%2Fca.pem&sslmode=verify-ca")
                .expect("parse");
        assert_eq!(rest, "postgresql://u@h/db");
        assert_eq!(p.mode, SslMode::VerifyCa);
        assert_eq!(p.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (rest, p) = split_tls_params("postgres://u@h/db").expect("parse");
        assert_eq!(
            (rest.as_str(), p.mode),
            ("postgres://u@h/db", SslMode::Prefer)
        );
    }

    #[test]
    fn key_value_modes_are_taken_out() {
        let (rest, p) =
            split_tls_params("host=h sslmode = require dbname='my db' sslrootcert='/a b/ca.pem'")
                .expect("parse");
        assert_eq!(rest, "host=h dbname='my db'");
        assert_eq!(p.mode, SslMode::Require);
        assert_eq!(p.root_cert.as_deref(), Some("/a b/ca.pem"));
    }

    #[test]
    fn unknown_modes_are_refused_with_the_choices() {
        let e = split_tls_params("postgres://h/db?sslmode=allow-ish").expect_err("refused");
        assert!(e.contains("allow-ish") && e.contains("verify-full"), "{e}");
        assert!(split_tls_params("host=h password='open").is_err());
        assert!(split_tls_params("postgres://h/db?sslrootcert=%zz").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://me:s3cret@db.example:5432/app?sslmode=require"),
            "postgres://me:***@db.example:5432/app?sslmode=require"
        );
        assert_eq!(redact_url("postgres://me@h/db"), "postgres://me@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=me&password=s3cret"),
            "postgres://h/db?user=me&password=***"
        );
        assert_eq!(
            redact_url("host=h password='s3 cret' dbname=x"),
            "host=h password=*** dbname=x"
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any string: an answer, never a panic; a URL's other
            /// parameters survive in order.
            #[test]
            fn never_panics_and_keeps_other_parameters(
                s in ".{0,80}",
                keys in proptest::collection::vec("[a-z_]{1,10}", 0..4),
                mode in prop::sample::select(vec!["disable", "prefer", "require", "verify-ca", "verify-full"]),
            ) {
                let _ = split_tls_params(&s);
                let _ = redact_url(&s);
                let others: Vec<String> = keys
                    .iter()
                    .filter(|k| *k != "sslmode" && *k != "sslrootcert")
                    .map(|k| format!("{k}=v"))
                    .collect();
                let mut query = others.clone();
                query.insert(query.len() / 2, format!("sslmode={mode}"));
                let url = format!("postgres://u@h/db?{}", query.join("&"));
                let (rest, params) = split_tls_params(&url).expect("parse");
                prop_assert_eq!(params.mode.as_str(), mode);
                let expect = if others.is_empty() {
                    "postgres://u@h/db".to_owned()
                } else {
                    format!("postgres://u@h/db?{}", others.join("&"))
                };
                prop_assert_eq!(rest, expect);
            }
        }
    }
}
