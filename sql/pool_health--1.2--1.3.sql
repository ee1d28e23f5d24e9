/* pool_health--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pool_health UPDATE TO '1.3'" to load this file. \quit

-- 1.3: hostile clients held off (HTTP, statements, names), and what
-- applications and their pools are told is right at the edge.
