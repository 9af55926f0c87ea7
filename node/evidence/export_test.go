package evidence

// QAbout is About's query, for the test of its plan.
const QAbout = qAbout
