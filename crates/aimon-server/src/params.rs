//! Query-string parameters: repeated keys (`tag=a=1&tag=b=2`), a clear error naming the
//! parameter at fault, and unknown parameters refused rather than ignored.

use std::str::FromStr;

use aimon::parse;
use aimon::{QueryOptions, Tags};
use chrono::{DateTime, TimeDelta, Utc};

use crate::error::{ApiError, ApiResult};

/// The parameters of one request, consumed one by one; [`Params::finish`] refuses the rest.
pub struct Params {
    pairs: Vec<(String, String)>,
    now: DateTime<Utc>,
}

impl Params {
    /// Parses a raw query string (`None`: no parameters).
    pub fn new(query: Option<&str>) -> Self {
        let pairs = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Params {
            pairs,
            now: aimon::time::now(),
        }
    }

    /// Every value of `name`, removed.
    pub fn all(&mut self, name: &str) -> Vec<String> {
        let mut values = Vec::new();
        self.pairs.retain(|(k, v)| {
            if k == name {
                values.push(v.clone());
                false
            } else {
                true
            }
        });
        values
    }

    /// The one value of `name`; two are an error.
    pub fn one(&mut self, name: &str) -> ApiResult<Option<String>> {
        let mut values = self.all(name);
        match values.len() {
            0 => Ok(None),
            1 => Ok(values.pop()),
            _ => Err(ApiError::invalid(
                name,
                format!("{name} is given more than once"),
            )),
        }
    }

    /// The one value of `name`, parsed with `FromStr`.
    pub fn parsed<T: FromStr>(&mut self, name: &str) -> ApiResult<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.one(name)?
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| ApiError::invalid(name, format!("{name}: {e}")))
            })
            .transpose()
    }

    /// A time: RFC 3339, `now` or a duration ago (`6h`), as the command line takes it.
    pub fn time(&mut self, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
        self.one(name)?
            .map(|v| parse::time_at(&v, self.now).map_err(|e| ApiError::invalid(name, e)))
            .transpose()
    }

    /// A positive duration (`5m`, `1h30m`).
    pub fn duration(&mut self, name: &str) -> ApiResult<Option<TimeDelta>> {
        self.one(name)?
            .map(|v| parse::positive_duration(&v).map_err(|e| ApiError::invalid(name, e)))
            .transpose()
    }

    /// Every `name=KEY=VALUE` pair; a key given twice with two values is refused.
    pub fn pairs(&mut self, name: &str) -> ApiResult<Tags> {
        let pairs = self
            .all(name)
            .iter()
            .map(|v| parse::key_value(v).map_err(|e| ApiError::invalid(name, e)))
            .collect::<ApiResult<Vec<_>>>()?;
        parse::tag_set(pairs).map_err(|e| ApiError::invalid(name, e))
    }

    /// `limit`, `offset`, `sort` (`FIELD` or `FIELD:desc`) and `filter` (`FIELD OP VALUE`,
    /// repeatable), as the command line's options.
    pub fn options(&mut self) -> ApiResult<QueryOptions> {
        let mut options = QueryOptions::default();
        if let Some(limit) = self.parsed::<usize>("limit")? {
            options = options.limit(limit);
        }
        if let Some(offset) = self.parsed::<usize>("offset")? {
            options = options.offset(offset);
        }
        if let Some(sort) = self.one("sort")? {
            let (field, order) = parse::sort(&sort).map_err(|e| ApiError::invalid("sort", e))?;
            options = options.sort(field, order);
        }
        for filter in self.all("filter") {
            options.filters.push(
                parse::filter_at(&filter, self.now).map_err(|e| ApiError::invalid("filter", e))?,
            );
        }
        Ok(options)
    }

    /// Refuses any parameter not consumed: a misspelt filter must not widen a query silently.
    pub fn finish(self) -> ApiResult<()> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(ApiError::invalid(
                k.clone(),
                format!("unknown query parameter {k:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_unknown_and_malformed_parameters_are_named() {
        let mut p = Params::new(Some("tag=a%3D1&tag=b=2&limit=5&limit=6&x=1"));
        assert_eq!(p.pairs("tag").unwrap().len(), 2);
        assert_eq!(p.one("limit").unwrap_err().status().as_u16(), 400);
        let e = p.finish().unwrap_err();
        assert!(e.message().contains("\"x\""), "{}", e.message());
        let mut p = Params::new(Some("limit=-1"));
        assert!(p.options().is_err());
        let mut p = Params::new(Some("start=yesterday"));
        assert!(p.time("start").is_err());
        let mut p = Params::new(Some("filter=name%20eq%20'x'&sort=name:desc&limit=3"));
        let options = p.options().unwrap();
        assert_eq!((options.filters.len(), options.limit), (1, 3));
        p.finish().unwrap();
    }
}
