-- Demo database `library`: authors, their books, library members and loans (t2s demo benchmark).

-- Dates are ISO-8601 text. A loan with return_date NULL is still out. Loans are due 21 days after loan_date.

CREATE TABLE authors (
  author_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  birth_year INTEGER,
  country TEXT
);

CREATE TABLE books (
  book_id INTEGER PRIMARY KEY,
  title TEXT NOT NULL,
  author_id INTEGER NOT NULL REFERENCES authors (author_id),
  genre TEXT,
  published_year INTEGER,
  pages INTEGER,
  copies INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE members (
  member_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  email TEXT,
  city TEXT,
  membership_type TEXT NOT NULL,
  joined_date TEXT NOT NULL
);

CREATE TABLE loans (
  loan_id INTEGER PRIMARY KEY,
  book_id INTEGER NOT NULL,
  member_id INTEGER NOT NULL,
  loan_date TEXT NOT NULL,
  due_date TEXT NOT NULL,
  return_date TEXT,
  FOREIGN KEY (book_id) REFERENCES books (book_id),
  FOREIGN KEY (member_id) REFERENCES members (member_id)
);

INSERT INTO authors (author_id, name, birth_year, country) VALUES
  (1, 'Jane Austen', 1775, 'United Kingdom'),
  (2, 'Mark Twain', 1835, 'United States'),
  (3, 'Leo Tolstoy', 1828, 'Russia'),
  (4, 'Gabriel Garcia Marquez', 1927, 'Colombia'),
  (5, 'Toni Morrison', 1931, 'United States'),
  (6, 'Haruki Murakami', 1949, 'Japan'),
  (7, 'Chinua Achebe', 1930, 'Nigeria'),
  (8, 'Virginia Woolf', 1882, 'United Kingdom'),
  (9, 'Fyodor Dostoevsky', 1821, 'Russia'),
  (10, 'Isabel Allende', 1942, 'Chile'),
  (11, 'Kazuo Ishiguro', 1954, 'United Kingdom'),
  (12, 'Margaret Atwood', 1939, 'Canada'),
  (13, 'Elena Ferrante', NULL, 'Italy'),
  (14, 'Ursula K. Le Guin', 1929, 'United States'),
  (15, 'Banana Yoshimoto', 1964, 'Japan'),
  (16, 'Octavia E. Butler', 1947, 'United States'),
  (17, 'Jorge Luis Borges', 1899, 'Argentina');

INSERT INTO books (book_id, title, author_id, genre, published_year, pages, copies) VALUES
  (1, 'Pride and Prejudice', 1, 'Romance', 1813, 432, 3),
  (2, 'Emma', 1, 'Romance', 1815, 474, 2),
  (3, 'Sense and Sensibility', 1, 'Romance', 1811, 409, 1),
  (4, 'Adventures of Huckleberry Finn', 2, 'Adventure', 1884, 366, 2),
  (5, 'The Adventures of Tom Sawyer', 2, 'Adventure', 1876, 274, 2),
  (6, 'War and Peace', 3, 'Historical', 1869, 1225, 1),
  (7, 'Anna Karenina', 3, 'Romance', 1878, 864, 2),
  (8, 'One Hundred Years of Solitude', 4, 'Magical Realism', 1967, 417, 3),
  (9, 'Love in the Time of Cholera', 4, 'Romance', 1985, 348, 1),
  (10, 'Beloved', 5, 'Historical', 1987, 324, 2),
  (11, 'Song of Solomon', 5, 'Literary Fiction', 1977, 337, 1),
  (12, 'Norwegian Wood', 6, 'Literary Fiction', 1987, 296, 2),
  (13, 'Kafka on the Shore', 6, 'Magical Realism', 2002, 505, 2),
  (14, '1Q84', 6, 'Magical Realism', 2009, 928, 1),
  (15, 'Things Fall Apart', 7, 'Historical', 1958, 209, 3),
  (16, 'Mrs Dalloway', 8, 'Literary Fiction', 1925, 194, 1),
  (17, 'To the Lighthouse', 8, 'Literary Fiction', 1927, 209, 1),
  (18, 'Crime and Punishment', 9, 'Literary Fiction', 1866, 671, 2),
  (19, 'The Brothers Karamazov', 9, 'Literary Fiction', 1880, 796, 1),
  (20, 'The House of the Spirits', 10, 'Magical Realism', 1982, 448, 2),
  (21, 'The Remains of the Day', 11, 'Literary Fiction', 1989, 258, 2),
  (22, 'Never Let Me Go', 11, 'Science Fiction', 2005, 288, 3),
  (23, 'The Handmaid''s Tale', 12, 'Dystopian', 1985, 311, 4),
  (24, 'Oryx and Crake', 12, 'Dystopian', 2003, 376, 1),
  (25, 'My Brilliant Friend', 13, 'Literary Fiction', 2011, 331, 2),
  (26, 'A Wizard of Earthsea', 14, 'Fantasy', 1968, 183, 2),
  (27, 'The Left Hand of Darkness', 14, 'Science Fiction', 1969, 304, 1),
  (28, 'The Dispossessed', 14, 'Science Fiction', 1974, NULL, 1),
  (29, 'Kitchen', 15, 'Literary Fiction', 1988, 152, 1),
  (30, 'Persuasion', 1, 'Romance', 1817, 249, 1);

INSERT INTO members (member_id, name, email, city, membership_type, joined_date) VALUES
  (1, 'Alice Johnson', 'alice.johnson@example.com', 'Hillview', 'Student', '2021-07-29'),
  (2, 'Brian Smith', 'brian.smith@example.com', 'Lakeside', 'Premium', '2022-03-06'),
  (3, 'Carla Gomez', 'carla.gomez@example.com', 'Riverton', 'Standard', '2023-06-02'),
  (4, 'David Lee', NULL, 'Springfield', 'Student', '2021-08-25'),
  (5, 'Emma Brown', 'emma.brown@example.com', 'Hillview', 'Premium', '2021-07-28'),
  (6, 'Farid Haddad', 'farid.haddad@example.com', 'Lakeside', 'Standard', '2021-11-20'),
  (7, 'Grace Kim', 'grace.kim@example.com', 'Riverton', 'Student', '2022-05-01'),
  (8, 'Henry Wilson', 'henry.wilson@example.com', 'Springfield', 'Premium', '2020-02-07'),
  (9, 'Isabel Rossi', 'isabel.rossi@example.com', 'Hillview', 'Standard', '2020-01-28'),
  (10, 'James Taylor', 'james.taylor@example.com', 'Lakeside', 'Student', '2023-07-19'),
  (11, 'Karen Davis', NULL, 'Riverton', 'Premium', '2021-11-28'),
  (12, 'Liam O''Connor', 'liam.oconnor@example.com', 'Springfield', 'Standard', '2021-09-15'),
  (13, 'Maria Garcia', 'maria.garcia@example.com', 'Hillview', 'Student', '2022-07-27'),
  (14, 'Noah Martin', 'noah.martin@example.com', 'Lakeside', 'Premium', '2022-06-25'),
  (15, 'Olivia Clark', 'olivia.clark@example.com', 'Riverton', 'Standard', '2023-06-27'),
  (16, 'Pedro Alvarez', NULL, 'Springfield', 'Student', '2020-01-31'),
  (17, 'Quinn Murphy', 'quinn.murphy@example.com', 'Hillview', 'Premium', '2019-07-26'),
  (18, 'Maria Garcia', 'maria.garcia@example.com', 'Lakeside', 'Standard', '2021-07-17'),
  (19, 'Sofia Novak', 'sofia.novak@example.com', 'Riverton', 'Student', '2020-09-27'),
  (20, 'Thomas Walker', 'thomas.walker@example.com', 'Springfield', 'Premium', '2019-11-01');

INSERT INTO loans (loan_id, book_id, member_id, loan_date, due_date, return_date) VALUES
  (1, 16, 6, '2023-01-20', '2023-02-10', '2023-01-25'),
  (2, 18, 11, '2023-02-04', '2023-02-25', '2023-03-01'),
  (3, 4, 15, '2023-02-04', '2023-02-25', NULL),
  (4, 4, 20, '2023-02-16', '2023-03-09', '2023-03-03'),
  (5, 20, 13, '2023-02-19', '2023-03-12', '2023-02-26'),
  (6, 9, 2, '2023-02-21', '2023-03-14', '2023-03-26'),
  (7, 8, 1, '2023-03-16', '2023-04-06', '2023-04-02'),
  (8, 12, 5, '2023-03-20', '2023-04-10', NULL),
  (9, 18, 5, '2023-04-09', '2023-04-30', '2023-04-26'),
  (10, 6, 8, '2023-04-18', '2023-05-09', NULL),
  (11, 15, 14, '2023-05-04', '2023-05-25', '2023-05-13'),
  (12, 26, 3, '2023-05-14', '2023-06-04', '2023-06-03'),
  (13, 13, 16, '2023-05-15', '2023-06-05', NULL),
  (14, 12, 19, '2023-05-28', '2023-06-18', '2023-05-31'),
  (15, 5, 2, '2023-06-03', '2023-06-24', '2023-06-14'),
  (16, 16, 18, '2023-07-05', '2023-07-26', '2023-07-14'),
  (17, 2, 2, '2023-07-18', '2023-08-08', '2023-07-21'),
  (18, 16, 19, '2023-07-19', '2023-08-09', '2023-07-26'),
  (19, 26, 20, '2023-07-25', '2023-08-15', '2023-08-09'),
  (20, 24, 1, '2023-08-11', '2023-09-01', '2023-08-15'),
  (21, 4, 7, '2023-09-10', '2023-10-01', '2023-10-13'),
  (22, 11, 8, '2023-09-17', '2023-10-08', '2023-09-25'),
  (23, 30, 3, '2023-09-22', '2023-10-13', '2023-10-02'),
  (24, 2, 19, '2023-09-23', '2023-10-14', '2023-10-08'),
  (25, 23, 7, '2023-10-08', '2023-10-29', '2023-10-20'),
  (26, 23, 3, '2023-10-18', '2023-11-08', NULL),
  (27, 14, 4, '2023-10-29', '2023-11-19', '2023-11-01'),
  (28, 18, 8, '2023-11-02', '2023-11-23', '2023-11-07'),
  (29, 1, 12, '2023-11-04', '2023-11-25', '2023-11-09'),
  (30, 1, 10, '2023-11-12', '2023-12-03', '2023-11-15'),
  (31, 17, 13, '2023-11-20', '2023-12-11', '2023-11-23'),
  (32, 27, 16, '2023-12-05', '2023-12-26', '2023-12-14'),
  (33, 29, 12, '2023-12-31', '2024-01-21', '2024-02-06'),
  (34, 21, 1, '2024-01-31', '2024-02-21', '2024-02-03'),
  (35, 17, 5, '2024-02-04', '2024-02-25', '2024-03-01'),
  (36, 8, 6, '2024-02-12', '2024-03-04', '2024-03-04'),
  (37, 17, 14, '2024-02-15', '2024-03-07', '2024-03-07'),
  (38, 16, 10, '2024-02-25', '2024-03-17', NULL),
  (39, 12, 1, '2024-02-28', '2024-03-20', '2024-03-05'),
  (40, 17, 3, '2024-03-11', '2024-04-01', '2024-04-05'),
  (41, 22, 3, '2024-05-12', '2024-06-02', '2024-06-12'),
  (42, 10, 15, '2024-05-21', '2024-06-11', '2024-05-29');
