"""The paper's result tables (Table 3, Table 5), shipped as package data."""
