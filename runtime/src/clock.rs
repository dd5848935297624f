//! UTC calendar time from the system clock: RFC 3339 for receipts and the `strftime` subset
//! that chat templates call (`strftime_now("%d %b %Y")` in the LLaMA 3.x templates).

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A UTC date and time of day (proleptic Gregorian calendar, whole seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    /// Year (e.g. 2026).
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
    /// Hour, 0–23.
    pub hour: u32,
    /// Minute, 0–59.
    pub minute: u32,
    /// Second, 0–59.
    pub second: u32,
    /// Day of the week, 0 = Monday … 6 = Sunday.
    pub weekday: u32,
    /// Day of the year, 1–366.
    pub yday: u32,
}

impl UtcTime {
    /// The time `t` (times before 1970 read as 1970-01-01T00:00:00Z).
    pub fn from_system(t: SystemTime) -> Self {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
        // Civil date from days since 1970-01-01, in eras of 400 years starting in March.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let before: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let yday = before[month as usize - 1] + day + u32::from(leap && month > 2);
        UtcTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            // 1970-01-01 was a Thursday (3).
            weekday: (days + 3).rem_euclid(7) as u32,
            yday,
        }
    }

    /// Now.
    pub fn now() -> Self {
        UtcTime::from_system(SystemTime::now())
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// Formats like C's / Python's `strftime` in the C locale for the directives `%a %A %b
    /// %B %d %e %H %I %j %m %M %p %S %y %Y %%`; any other directive is an error naming it
    /// (rather than a guess at what a platform would print).
    pub fn strftime(&self, format: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let month = MONTHS[self.month as usize - 1];
            let weekday = WEEKDAYS[self.weekday as usize];
            match chars.next() {
                Some('a') => out.push_str(&weekday[..3]),
                Some('A') => out.push_str(weekday),
                Some('b') => out.push_str(&month[..3]),
                Some('B') => out.push_str(month),
                Some('d') => out.push_str(&format!("{:02}", self.day)),
                Some('e') => out.push_str(&format!("{:2}", self.day)),
                Some('H') => out.push_str(&format!("{:02}", self.hour)),
                Some('I') => out.push_str(&format!("{:02}", (self.hour + 11) % 12 + 1)),
                Some('j') => out.push_str(&format!("{:03}", self.yday)),
                Some('m') => out.push_str(&format!("{:02}", self.month)),
                Some('M') => out.push_str(&format!("{:02}", self.minute)),
                Some('p') => out.push_str(if self.hour < 12 { "AM" } else { "PM" }),
                Some('S') => out.push_str(&format!("{:02}", self.second)),
                Some('y') => out.push_str(&format!("{:02}", self.year.rem_euclid(100))),
                Some('Y') => out.push_str(&self.year.to_string()),
                Some('%') => out.push('%'),
                Some(other) => return Err(format!("strftime directive %{other} is not supported")),
                None => return Err("strftime format ends with a lone %".into()),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> UtcTime {
        UtcTime::from_system(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn calendar_dates_weekdays_and_days_of_the_year() {
        assert_eq!(at(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(at(0).weekday, 3); // Thursday
        let leap = at(951_782_400); // 2000-02-29, a Tuesday
        assert_eq!(leap.rfc3339(), "2000-02-29T00:00:00Z");
        assert_eq!((leap.weekday, leap.yday), (1, 60));
        let t = at(1_795_593_845); // 2026-11-25T08:04:05Z, a Wednesday
        assert_eq!(t.rfc3339(), "2026-11-25T08:04:05Z");
        assert_eq!((t.weekday, t.yday), (2, 329));
        let end = at(1_704_067_199); // 2023-12-31T23:59:59Z
        assert_eq!(end.yday, 365);
    }

    #[test]
    fn strftime_as_python_prints_it() {
        let t = at(1_795_593_845);
        // The LLaMA 3.x template's date line.
        assert_eq!(t.strftime("%d %b %Y").unwrap(), "25 Nov 2026");
        assert_eq!(
            t.strftime("%A %B %e, %y %H:%M:%S %I%p day %j 100%%")
                .unwrap(),
            "Wednesday November 25, 26 08:04:05 08AM day 329 100%"
        );
        assert_eq!(at(0).strftime("%a %d/%m %I %p").unwrap(), "Thu 01/01 12 AM");
        assert_eq!(t.strftime("no directives").unwrap(), "no directives");
        assert!(t.strftime("%Q").unwrap_err().contains("%Q"));
        assert!(t.strftime("50%").unwrap_err().contains("lone %"));
    }
}
