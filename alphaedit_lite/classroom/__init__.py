"""Exercise checkers and the student-version generator."""
