"""SQLAlchemy 2 ORM (psycopg 3 dialect) through sluice: models, a unit of work, queries, and
where autocommit reads ran."""

from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy import ForeignKey

from compat_common import URL, check, eventually, main, node


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "orm_authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[list["Book"]] = relationship(back_populates="author", cascade="all, delete-orphan")


class Book(Base):
    __tablename__ = "orm_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("orm_authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


def orm():
    url = URL.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, pool_size=3)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        for a in range(5):
            session.add(Author(name=f"author{a}", books=[Book(title=f"b{a}.{i}") for i in range(4)]))
        session.commit()
    with Session(engine) as session:
        authors = session.scalars(select(Author).order_by(Author.name)).all()
        check([a.name for a in authors] == [f"author{a}" for a in range(5)], "authors read back wrong")
        check(sum(len(a.books) for a in authors) == 20, "books read back wrong")
        first = authors[0]
        first.name = "renamed"
        session.delete(authors[1])
        session.commit()
    with Session(engine) as session:
        names = session.scalars(select(Author.name).order_by(Author.name)).all()
        check(names == ["author2", "author3", "author4", "renamed"], f"after update/delete: {names}")
        port = session.execute(text("SELECT inet_server_port()")).scalar()
        check(node(port) == "primary", "a read inside an ORM transaction left the primary")
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    with reader.connect() as conn:
        eventually(
            lambda: node(conn.execute(text("SELECT inet_server_port()")).scalar()) == "replica",
            "an autocommit read on a replica",
        )
        # Another session than the writer's: a replica shows the books once it has replayed them.
        eventually(
            lambda: len(conn.execute(select(Book).where(Book.title.like("b2.%"))).all()) == 4,
            "an autocommit ORM query finds the 4 books",
        )
    engine.dispose()


CASES = {"orm": orm}

if __name__ == "__main__":
    main(CASES)
