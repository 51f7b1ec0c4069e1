//! PostgreSQL values to JSON (result columns) and JSON to PostgreSQL (the watermark `$1`).

use std::error::Error;
use std::fmt::Write as _;

use serde_json::Value;
use tokio_postgres::types::{FromSql, ToSql, Type};

type BoxError = Box<dyn Error + Sync + Send>;

/// The column types the extractor reads; cast others to text in the query (`col::text`).
pub fn readable(ty: &Type) -> bool {
    [
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::OID,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::JSON,
        Type::JSONB,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::DATE,
        Type::UUID,
    ]
    .contains(ty)
}

/// Any readable column as JSON: numbers, text, booleans, JSON as it is; times as RFC 3339 text
/// (`timestamptz` with `Z`, `timestamp` and `date` without a zone); NUMERIC as a JSON number;
/// NULL as null.
pub struct JsonValue(pub Value);

impl<'a> FromSql<'a> for JsonValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let v = match *ty {
            Type::BOOL => Value::from(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::from(i16::from_sql(ty, raw)?),
            Type::INT4 => Value::from(i32::from_sql(ty, raw)?),
            Type::INT8 => Value::from(i64::from_sql(ty, raw)?),
            Type::OID => Value::from(u32::from_sql(ty, raw)?),
            Type::FLOAT4 => float(f64::from(f32::from_sql(ty, raw)?)),
            Type::FLOAT8 => float(f64::from_sql(ty, raw)?),
            Type::NUMERIC => {
                let text = numeric_text(raw)?;
                match text.parse::<f64>() {
                    Ok(f) if f.is_finite() => float(f),
                    _ => Value::String(text),
                }
            }
            Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
            Type::TIMESTAMPTZ => Value::String(jiff::Timestamp::from_sql(ty, raw)?.to_string()),
            Type::TIMESTAMP => Value::String(jiff::civil::DateTime::from_sql(ty, raw)?.to_string()),
            Type::DATE => Value::String(jiff::civil::Date::from_sql(ty, raw)?.to_string()),
            Type::UUID => Value::String(uuid_text(raw)?),
            _ => Value::String(<&str>::from_sql(ty, raw)?.to_owned()),
        };
        Ok(JsonValue(v))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(JsonValue(Value::Null))
    }

    fn accepts(ty: &Type) -> bool {
        readable(ty)
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// NUMERIC's binary form (digit groups of base 10 000) as decimal text.
pub fn numeric_text(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<i16, BoxError> {
        raw.get(i..i + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "NUMERIC value too short".into())
    };
    let ndigits = usize::try_from(word(0)?).map_err(|_| "bad NUMERIC digit count")?;
    let weight = i32::from(word(2)?);
    let sign = word(4)? as u16;
    let dscale = usize::try_from(word(6)?).map_err(|_| "bad NUMERIC scale")?;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return Err("bad NUMERIC sign".into()),
    }
    let digits = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Result<Vec<i16>, _>>()?;
    let digit = |group: i32| -> i16 {
        usize::try_from(group)
            .ok()
            .and_then(|g| digits.get(g).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for g in 0..=weight {
            if g == 0 {
                write!(out, "{}", digit(g))?;
            } else {
                write!(out, "{:04}", digit(g))?;
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut g = weight + 1;
        while frac.len() < dscale {
            write!(frac, "{:04}", digit(g))?;
            g += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

fn uuid_text(raw: &[u8]) -> Result<String, BoxError> {
    if raw.len() != 16 {
        return Err("a UUID has 16 bytes".into());
    }
    let mut s = String::with_capacity(36);
    for (i, b) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        write!(s, "{b:02x}")?;
    }
    Ok(s)
}

/// The watermark as a parameter of type `ty` (`$1`'s type, which PostgreSQL infers from the
/// query).
pub fn param(value: &Value, ty: &Type) -> Result<Box<dyn ToSql + Sync + Send>, String> {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let bad = || format!("the watermark `{text}` is not a `{ty}`");
    let int = || -> Result<i64, String> {
        value
            .as_i64()
            .or_else(|| text.trim().parse().ok())
            .ok_or_else(bad)
    };
    Ok(match *ty {
        Type::INT2 => Box::new(i16::try_from(int()?).map_err(|_| bad())?),
        Type::INT4 => Box::new(i32::try_from(int()?).map_err(|_| bad())?),
        Type::INT8 => Box::new(int()?),
        Type::FLOAT4 | Type::FLOAT8 => {
            let f = value
                .as_f64()
                .or_else(|| text.trim().parse().ok())
                .ok_or_else(bad)?;
            if *ty == Type::FLOAT4 {
                Box::new(f as f32)
            } else {
                Box::new(f)
            }
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Box::new(text),
        Type::TIMESTAMPTZ => Box::new(
            text.parse::<jiff::Timestamp>()
                .or_else(|_| {
                    text.parse::<jiff::civil::DateTime>()
                        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
                        .map(|z| z.timestamp())
                })
                .map_err(|_| bad())?,
        ),
        Type::TIMESTAMP => Box::new(text.parse::<jiff::civil::DateTime>().map_err(|_| bad())?),
        Type::DATE => Box::new(text.parse::<jiff::civil::Date>().map_err(|_| bad())?),
        _ => {
            return Err(format!(
                "`$1` has type `{ty}`, which the watermark cannot be sent as; cast it in the query (`$1::text::{ty}`)"
            ));
        }
    })
}
